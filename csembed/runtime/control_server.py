"""The control server: a handler served over UNIX sockets and serial lines.

Theory of operation
-------------------
On every connection (or when a serial line is opened) the server first
writes the handshake line ``{"service":"ClearSkies Control","software":...,
"protocol":1}``, then reads request lines and answers each with exactly one
reply line, strictly in order: requests on one connection are handled one
after another, so pipelined requests get their replies in the order sent.
A bad line (not JSON, not an object, no ``type``, unknown command, bad
arguments, too long) gets an error reply and the connection keeps serving;
blank lines are ignored (a person at a serial terminal pressing Enter).
:meth:`ControlServer.dispatch` is the whole request path, usable on its own.

The UNIX socket (:meth:`ControlServer.start_unix`) is created so that only
its owner can ever connect: the file is ``chmod``-ed to 0600 after ``bind``
and before ``listen`` -- a socket that is not yet listening refuses every
connection, so there is no moment when a wider mode is reachable -- and a
missing parent directory is created with mode 0700. A socket file already at
the path is probed: if something answers, we refuse to start
(:class:`DaemonRunningError`, "another daemon is running"); if the connection
is refused, it is a leftover of a daemon that died, and it is removed. Any
other kind of file there is never touched. On close the socket file is
removed if it is still ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

from csembed import __version__
from csembed.control.commands import parse_request
from csembed.control.errors import ControlError, ControlRequestError, DaemonRunningError
from csembed.control.handler import ControlHandler
from csembed.control.lines import DEFAULT_MAX_LINE, Line, LineDecoder, encode_line

__all__ = [
    "CONTROL_PROTOCOL",
    "SERVICE_NAME",
    "Channel",
    "ControlServer",
    "UnixControlListener",
    "prepare_unix_socket",
]

SERVICE_NAME: Final = "ClearSkies Control"
CONTROL_PROTOCOL: Final = 1
_MAX_UNIX_PATH: Final = 107  # sun_path holds 108 bytes including the NUL
_READ_SIZE: Final = 65536

log = logging.getLogger("csembed.control")


class Channel(Protocol):
    """A byte stream the server can serve: a socket connection or a serial line."""

    async def read(self) -> bytes: ...  # b"" at end of stream
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


class _StreamChannel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(_READ_SIZE)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


def _error_reply(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, ControlRequestError):
        return exc.reply()
    if isinstance(exc, OSError) and exc.errno:
        code = errno.errorcode.get(exc.errno, "EIO")
        where = f" '{exc.filename}'" if exc.filename else ""
        return {"error": code, "message": f"{exc.strerror or code}{where}"}
    return {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]}


class ControlServer:
    """Serves one :class:`ControlHandler` on any number of channels.

    ``max_line`` bounds a request line; ``max_connections`` bounds the
    simultaneous socket connections (more are told ``busy`` and closed).
    """

    def __init__(self, handler: ControlHandler, *, software: str = f"csembed {__version__}",
                 max_line: int = DEFAULT_MAX_LINE, max_connections: int = 16) -> None:
        self.handler = handler
        self.software = software
        self.max_line = max_line
        self.max_connections = max_connections
        self._connections = 0

    def handshake(self) -> dict[str, Any]:
        """The handshake object sent first on every channel."""
        return {"service": SERVICE_NAME, "software": self.software,
                "protocol": CONTROL_PROTOCOL}

    async def dispatch(self, line: bytes) -> bytes:
        """Answer one request line with one reply line (never raises on bad input)."""
        try:
            request = parse_request(line)
            method: Callable[..., Awaitable[Any]] = getattr(self.handler, request.command.name)
            reply = request.command.reply(await method(**request.args))
            return encode_line(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, ControlRequestError | OSError):
                log.exception("control command failed")
            return encode_line(_error_reply(exc))

    async def serve_channel(self, channel: Channel) -> None:
        """Handshake, then answer requests until the channel ends."""
        decoder = LineDecoder(self.max_line)
        await channel.write(encode_line(self.handshake()))
        while data := await channel.read():
            decoder.receive_data(data)
            for event in decoder.events():
                if isinstance(event, Line):
                    if not event.data.strip():
                        continue
                    reply = await self.dispatch(event.data)
                else:
                    reply = encode_line(ControlRequestError(
                        "line_too_long", f"request line longer than {event.limit} bytes; "
                        "ignored up to its end").reply())
                await channel.write(reply)

    async def serve_stream(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """Serve one accepted socket connection, then close it."""
        channel = _StreamChannel(reader, writer)
        self._connections += 1
        try:
            if self._connections > self.max_connections:
                await channel.write(encode_line(self.handshake()))
                await channel.write(encode_line(ControlRequestError(
                    "busy", f"more than {self.max_connections} control connections").reply()))
                return
            await self.serve_channel(channel)
        except (ConnectionError, OSError) as exc:
            log.debug("control connection ended: %s", exc)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections -= 1
            await channel.close()

    async def start_unix(self, path: str | os.PathLike[str]) -> UnixControlListener:
        """Listen on a UNIX socket at ``path`` (mode 0600). See the module docstring.

        Raises :class:`DaemonRunningError` if a daemon already answers there,
        :class:`ControlError` for other problems with the path.
        """
        sock = prepare_unix_socket(Path(path))
        listener = UnixControlListener(self, Path(path))
        try:
            await listener._start(sock)
        except BaseException:
            sock.close()
            raise
        return listener

    async def serve_serial(self, device: str, baudrate: int = 115200) -> None:
        """Serve the control protocol on a serial line until it hangs up."""
        from csembed.runtime.control_serial import SerialChannel  # pyserial: only when asked
        channel = SerialChannel.open(device, baudrate)
        try:
            await self.serve_channel(channel)
        finally:
            await channel.close()



class UnixControlListener:
    """A listening control socket; :meth:`close` stops it and removes the file."""

    def __init__(self, control: ControlServer, path: Path) -> None:
        self._control = control
        self.path = path
        self._inode = os.stat(path).st_ino
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def _start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            # Accepted just before close(): hang up, or wait_closed() would wait for it.
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._control.serve_stream(reader, writer)
        finally:
            self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening, end open connections, remove the socket file if still ours."""
        self._closing = True
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def __aenter__(self) -> UnixControlListener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _clear_stale(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale control socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except (BlockingIOError, TimeoutError):
        raise DaemonRunningError(f"another daemon is running: {path} answers "
                                 "(but is busy)") from None
    except OSError as exc:
        raise ControlError(f"cannot check control socket {path}: {exc}") from None
    finally:
        probe.close()
    raise DaemonRunningError(f"another daemon is running: {path} answers")


def prepare_unix_socket(path: Path, backlog: int = 16) -> socket.socket:
    """Bind and listen on ``path`` with mode 0600; clear a stale socket first."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise ControlError(f"control socket path is too long for a UNIX socket "
                           f"({len(os.fsencode(path))} bytes, limit {_MAX_UNIX_PATH}): {path}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"cannot create {path.parent}: {exc}") from None
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        sock.bind(str(path))
        bound = True
        # Not listening yet, so nobody can connect while the mode is still the umask's.
        os.chmod(path, 0o600)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if bound:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if exc.errno == errno.EADDRINUSE:
            raise DaemonRunningError(f"another daemon is running: {path} was "
                                     "just taken") from None
        raise ControlError(f"cannot listen on {path}: {exc}") from None
    return sock
