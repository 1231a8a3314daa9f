"""The asyncio side of the web page: accept, read one request, answer, close.

Theory of operation
-------------------
:class:`WebServer` listens on :class:`~csembed.web.guard.WebOptions`'s
address. Each connection gets a :class:`~csembed.web.http.RequestParser`;
the whole request must arrive within :data:`READ_TIMEOUT` seconds (a slow
sender holds one slot, not the daemon) and the answer must be taken within
:data:`WRITE_TIMEOUT`. At most ``max_connections`` connections are served at
once; more are answered 503 and closed at once. The request then passes the
:class:`~csembed.web.guard.Guard` and goes to its route
(:mod:`csembed.web.app`), which talks to the daemon only through the
:data:`~csembed.web.app.Control` callable.

Every answer carries headers that keep the page to itself: a strict
Content-Security-Policy (scripts and styles only from the page's own origin,
images only as ``data:`` URIs), no framing, no sniffing, no caching, no
referrer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any, Final

from csembed.errors import CsembedError
from csembed.protocol.wire import NEED_DATA
from csembed.runtime.control_server import ControlServer
from csembed.runtime.data_dir import parse_host_port
from csembed.web.app import Control, ControlFailed, Response, handle
from csembed.web.guard import Guard, WebOptions
from csembed.web.http import HttpError, Limits, Request, RequestParser, encode_response

__all__ = ["READ_TIMEOUT", "WRITE_TIMEOUT", "WebError", "WebServer", "control_of", "start_web",
           "web_options"]

READ_TIMEOUT: Final = 10.0  #: seconds for a whole request to arrive
WRITE_TIMEOUT: Final = 10.0  #: seconds for the client to take the answer
LINGER_TIMEOUT: Final = 1.0  #: after an error, seconds to drain what the client still sends
LINGER_BYTES: Final = 256 * 1024  #: ... and at most this much
_READ_SIZE: Final = 4096

_SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

log = logging.getLogger("csembed.web")


def control_of(server: ControlServer) -> Control:
    """A :data:`Control` that dispatches through ``server`` in-process."""
    async def call(request: dict[str, Any]) -> dict[str, Any]:
        reply = json.loads(await server.dispatch(json.dumps(request).encode("utf-8")))
        if not isinstance(reply, dict):
            raise TypeError("control reply is not an object")
        return reply
    return call


class WebServer:
    """The listening page; :meth:`close` stops it and ends open connections."""

    def __init__(self, options: WebOptions, control: Control, *,
                 limits: Limits | None = None, max_connections: int = 16,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.options = options
        self.read_timeout = read_timeout
        self.control = control
        self.limits = limits or Limits()
        self.max_connections = max_connections
        self.guard: Guard | None = None
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound address (port 0 picks one)."""
        self._server = await asyncio.start_server(self._serve, self.options.host,
                                                  self.options.port, limit=_READ_SIZE)
        sock = self._server.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))
        self.guard = Guard(self.options, self.address[1], secrets.token_bytes(32))
        return self.address

    @property
    def url(self) -> str:
        """The page's address, for logs and the ready line."""
        assert self.address is not None
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if len(self._tasks) > self.max_connections:
                response, head_only = _error(503, "too many connections"), False
            else:
                peer = writer.get_extra_info("peername")
                client = str(peer[0]) if isinstance(peer, tuple) else "?"
                response, head_only = await self._answer(reader, client)
            await self._write(writer, response, head_only)
            if response.status >= 400:
                await _linger(reader, writer)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.debug("web connection ended: %s", exc)
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, client: str) -> tuple[Response, bool]:
        try:
            request = await self._read(reader)
        except HttpError as exc:
            return _error(exc.status, exc.message), False
        except (ConnectionError, OSError):
            raise
        except Exception:
            log.exception("web request could not be read")
            return _error(400, "unreadable request"), False
        head_only = request.method == "HEAD"
        if self.guard is None:
            return _error(503, "starting up"), head_only
        try:
            self.guard.check(request, client, time.monotonic())
            return await handle(self.control, request, self.guard.csrf_token), head_only
        except ControlFailed as exc:
            return _error(exc.status, exc.message, exc.code), head_only
        except HttpError as exc:
            response = _error(exc.status, exc.message)
            if exc.status == 401:
                response = Response(401, response.content_type, response.body,
                                    (("WWW-Authenticate",
                                      'Basic realm="csembed", charset="UTF-8"'),))
            return response, head_only
        except Exception:
            log.exception("web request %s %s failed", request.method, request.path[:200])
            return _error(500, "internal error; see the daemon's log"), head_only

    async def _read(self, reader: asyncio.StreamReader) -> Request:
        parser = RequestParser(self.limits)
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    event = parser.next_event()
                    if event is not NEED_DATA:
                        assert isinstance(event, Request)
                        return event
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        raise HttpError(400, "connection closed mid-request")
                    parser.receive_data(data)
        except TimeoutError:
            raise HttpError(408, f"request not complete within {self.read_timeout:g} "
                            "s") from None

    async def _write(self, writer: asyncio.StreamWriter, response: Response,
                     head_only: bool) -> None:
        headers = [("Content-Type", response.content_type), *_SECURITY_HEADERS,
                   *response.headers]
        writer.write(encode_response(response.status, headers, response.body,
                                     head_only=head_only))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and drop what the client still sends (briefly, boundedly).

    Closing a socket with unread input makes the kernel send a reset, which can
    destroy our error reply before the client reads it.
    """
    if writer.can_write_eof():
        writer.write_eof()
    dropped = 0
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(LINGER_TIMEOUT):
            while dropped < LINGER_BYTES and (chunk := await reader.read(_READ_SIZE)):
                dropped += len(chunk)


def _error(status: int, message: str, code: str | None = None) -> Response:
    body = {"error": code or f"http_{status}", "message": message}
    return Response(status, "application/json", json.dumps(body).encode("utf-8"))


class WebError(CsembedError):
    """The web page cannot be started as configured."""


def web_options(address: tuple[str, int] | None, password: str | None,
                config: Mapping[str, Any]) -> WebOptions | None:
    """The page's options: the ``--web`` flags win over the ``web`` and
    ``web_password`` settings; ``None`` when the page is off."""
    if address is None:
        configured = config.get("web")
        if not configured:
            return None
        address = parse_host_port(str(configured), "web")
    if password is None:
        password = config.get("web_password") or None
    host, port = address
    try:
        return WebOptions(host or "0.0.0.0", port, password)
    except ValueError as exc:
        raise WebError(str(exc)) from None


async def start_web(options: WebOptions, control: ControlServer) -> WebServer:
    """Start the page for a daemon's control server (:class:`WebError` if it cannot listen)."""
    server = WebServer(options, control_of(control))
    try:
        await server.start()
    except OSError as exc:
        raise WebError(f"cannot serve the web page on {options.host}:{options.port}: "
                       f"{exc.strerror or exc}") from None
    log.info("web page at %s%s", server.url,
             "" if options.password is None else " (password required)")
    return server
