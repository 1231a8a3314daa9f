"""asyncio adapter: run a sans-I/O session over a TCP connection.

The protocol objects (:class:`~csembed.protocol.core.PeerConnection`, or a bare
:class:`~csembed.security.handshake.SecureSession`) never touch a socket or a
clock; :class:`SessionStream` is the only bridge. Its loop is the one every
sans-I/O adapter has: pull events until the machine says ``NEED_DATA``,
write whatever the machine queued, then wait for either more bytes from the
socket or the machine's next deadline (``get_timer``), whichever comes first,
and feed that back (``receive_data`` / ``handle_timer``).

It sits on an :class:`asyncio.BufferedProtocol` rather than asyncio streams:
the kernel copies received bytes straight into the machine's own input
buffer (``get_buffer``/``buffer_updated``, when the machine offers them; else
into one reused buffer that ``receive_data`` copies from), so a bulk transfer
costs no per-read allocation or extra copy. Flow control both ways: once a read's worth of
bytes (``read_size``) was fed to the machine but not yet turned into events
(the application is slow), the socket is paused until the machine asks for
data again, so TCP throttles the peer and the machine holds at most about
two reads; writes wait while the transport's
buffer is above its high-water mark, so a slow peer throttles us.

The adapter owns the clock (by default the event loop's monotonic
``loop.time``): it passes ``now`` from it with every input and timer, and
compares the machine's ``get_timer`` deadlines against it. :func:`connect` and
:func:`serve` set up both for TCP. One task may wait in
:meth:`SessionStream.next_event` while another sends through
:meth:`SessionStream.call`/:meth:`SessionStream.flush`; each flush hands the
transport everything queued so far, so bytes stay in order. Timers are
handled by whichever task waits in ``next_event``, so a connection needs one.

A connection that ends is freed by reference counting alone, at once: the
protocol drops its stream when the connection is lost, and a failure event
keeps no traceback. Under a flood of connections that never authenticate,
waiting for the cycle collector would let thousands of them pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from csembed.need_data import NeedData
from csembed.protocol.core import CoreConfig, PeerConnection
from csembed.protocol.core_access import CredentialRegistry, Grant
from csembed.runtime.admission import PreauthGate
from csembed.security.handshake import SessionFailed
from csembed.security.keys import Rng, default_rng
from csembed.security.rate_limit import RateLimiter

log = logging.getLogger("csembed.session")

READ_SIZE = 1 << 20
"""Largest single read from the socket (the reused receive buffer's size)."""
FIRST_READ = 4096
"""First read size of a connection; it doubles, up to ``read_size``, each time a
read fills it after the peer authenticated (handshake messages are < 300 bytes)."""
CLOSE_TIMEOUT = 5.0
"""Seconds a clean close waits for the peer to take what is still queued."""
WRITE_BUFFER = 2 << 20
"""Bytes the transport may hold beyond what the kernel took before writers wait."""


class Machine(Protocol):
    """What :class:`SessionStream` needs from a sans-I/O endpoint."""

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None: ...
    def next_event(self) -> Any: ...
    def data_to_send(self) -> bytes | bytearray: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def close(self) -> None: ...


def _authenticated(machine: Any) -> bool:
    """Whether the peer on ``machine`` has proved its secret (the handshake is over)."""
    return bool(getattr(machine, "handshake_complete", True))


class _Transport(asyncio.BufferedProtocol):
    """Moves bytes between a socket and its :class:`SessionStream`."""

    def __init__(self, read_size: int) -> None:
        self.read_size = read_size
        self.read_hint = min(FIRST_READ, read_size)  #: size of the next read; grows
        self.stream: SessionStream | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = memoryview(b"")  # allocated when reads need it, grown with read_hint
        self._write_ready: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_connect: Callable[[_Transport], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER)
        if self.on_connect is not None:
            self.on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        want = self.read_hint
        stream = self.stream
        if stream is not None and stream._direct:
            return stream.machine.get_buffer(want)  # type: ignore[attr-defined]
        if len(self._buffer) < want:
            self._buffer = memoryview(bytearray(want))
        return self._buffer[:want]

    def buffer_updated(self, nbytes: int) -> None:
        stream = self.stream
        if nbytes >= self.read_hint and self.read_hint < self.read_size \
                and stream is not None and _authenticated(stream.machine):
            self.read_hint = min(self.read_hint * 2, self.read_size)
        if stream is None:
            return
        if stream._direct:
            stream.machine.buffer_updated(nbytes, stream.clock())  # type: ignore[attr-defined]
            stream._on_received(nbytes)
        else:
            stream._on_data(self._buffer[:nbytes])

    def eof_received(self) -> bool:
        if self.stream is not None:
            self.stream._on_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream._on_eof()
            self.stream = None  # the stream holds us: let refcounting free both
        # asyncio's socket transport holds a bound method of itself (3.11's
        # _read_ready_cb), a cycle only a full gc pass would free; it reads no more.
        if getattr(self.transport, "_read_ready_cb", None) is not None:
            self.transport._read_ready_cb = None  # type: ignore[union-attr]
        if not self.closed.done():
            self.closed.set_result(None)
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._write_ready is None:
            self._write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None:
            if not self._write_ready.done():
                self._write_ready.set_result(None)
            self._write_ready = None

    async def wait_writable(self) -> None:
        if self._write_ready is not None:
            # shielded: several tasks may wait on it, and cancelling one of them
            # must not cancel the shared future under the others
            await asyncio.shield(self._write_ready)


class SessionStream:
    """A sans-I/O machine bound to a TCP connection (see module docstring)."""

    def __init__(self, machine: Machine, link: _Transport, *,
                 clock: Callable[[], float] | None = None) -> None:
        self.machine = machine
        self._link = link
        link.stream = self
        self.clock = clock or asyncio.get_running_loop().time
        self._eof = False
        self._finished = False
        self._unprocessed = 0
        self._paused = False
        self._wakeup: asyncio.Future[None] | None = None
        # machines that offer get_buffer/buffer_updated are read into directly
        self._direct = hasattr(machine, "get_buffer") and hasattr(machine, "buffer_updated")

    @property
    def peername(self) -> Any:
        """The remote address, as the transport reports it."""
        assert self._link.transport is not None
        return self._link.transport.get_extra_info("peername")

    # --- called by _Transport

    def _on_data(self, data: memoryview) -> None:
        if not self._finished:
            self.machine.receive_data(data, self.clock())  # copies what it keeps
            self._on_received(len(data))

    def _on_received(self, nbytes: int) -> None:
        self._unprocessed += nbytes
        if self._unprocessed >= self._link.read_hint and not self._paused:
            assert self._link.transport is not None
            self._link.transport.pause_reading()
            self._paused = True
        self._wake()

    def _on_eof(self) -> None:
        if not self._eof:
            self._eof = True
            if not self._finished:
                self.machine.receive_data(b"", self.clock())
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # --- public

    async def next_event(self) -> Any:
        """The machine's next event, reading and waiting as needed; ``None`` once
        the connection has nothing more to say (socket closed, machine done)."""
        while True:
            event = self.machine.next_event()
            with contextlib.suppress(ConnectionError):  # reported as the end below
                await self.flush()
            if not isinstance(event, NeedData):
                if isinstance(event, SessionFailed):
                    self.abort()
                return event
            if self._eof or self._finished:
                return None
            self._unprocessed = 0
            if self._paused:
                assert self._link.transport is not None
                self._link.transport.resume_reading()
                self._paused = False
            self._wakeup = asyncio.get_running_loop().create_future()
            timer = self.machine.get_timer()
            try:
                if timer is None:
                    await self._wakeup
                else:
                    async with asyncio.timeout(max(0.0, timer - self.clock())):
                        await self._wakeup
            except TimeoutError:
                self.machine.handle_timer(self.clock())
            finally:
                self._wakeup = None

    async def flush(self) -> None:
        """Write whatever the machine queued, waiting while the transport is full.

        Raises :class:`ConnectionResetError` once the connection is lost (the
        first failed send closes it), so a writer stops at once instead of
        handing a dead transport more data."""
        data = self.machine.data_to_send()
        if self._finished:
            if data:
                raise ConnectionResetError("the connection is closed")
            return
        transport = self._link.transport
        assert transport is not None
        if transport.is_closing() or self._link.closed.done():
            self._abort()
            raise ConnectionResetError("the connection was lost")
        if data:
            transport.write(data)
            await self._link.wait_writable()
            if transport.is_closing():  # the write failed (peer reset): close now
                self._abort()
                raise ConnectionResetError("the connection was lost while sending")

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a sending method of the machine by name, then flush."""
        result = getattr(self.machine, method)(*args, **kwargs)
        await self.flush()
        return result

    async def send_message(self, body: Mapping[str, Any] | bytes, **kwargs: Any) -> None:
        """:meth:`PeerConnection.send_message`, then flush."""
        await self.call("send_message", body, **kwargs)

    async def send_chunk(self, data: bytes) -> None:
        """:meth:`PeerConnection.send_chunk`, then flush."""
        await self.call("send_chunk", data)

    async def send_payload_end(self) -> None:
        """:meth:`PeerConnection.send_payload_end`, then flush."""
        await self.call("send_payload_end")

    async def close(self) -> None:
        """Close cleanly (our FINAL record), then the socket."""
        if not self._finished:
            self.machine.close()
            # A peer that does not read would hold the close record (and us) forever.
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.flush()
            except (ConnectionError, TimeoutError):
                self._abort(hard=True)
            self._abort()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._link.closed
        except TimeoutError:
            self._abort(hard=True)
            await self._link.closed

    def abort(self) -> None:
        """Drop the connection at once, without a close record. One still
        authenticating is reset: it has nothing worth delivering, and a reset frees
        it at both ends at once (a uTP one would otherwise linger, resending its FIN
        to a peer that may never answer)."""
        self._abort(hard=not self.authenticated)

    @property
    def authenticated(self) -> bool:
        """The peer proved its secret (and still after the connection ended)."""
        return _authenticated(self.machine)

    @property
    def finished(self) -> bool:
        """The connection is closed, or closing."""
        return self._finished or self._link.closed.done()

    def _abort(self, hard: bool = False) -> None:
        self._finished = True
        if self._link.transport is not None:
            # close() still sends what is buffered; abort() drops it (for a peer
            # that stopped reading, which would otherwise hold the socket forever).
            if hard:
                self._link.transport.abort()
            else:
                self._link.transport.close()

    async def __aenter__(self) -> SessionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_stream(host: str, port: int,
                      make_machine: Callable[[float], Machine], *,
                      read_size: int = READ_SIZE) -> SessionStream:
    """Open a TCP connection for any sans-I/O machine; ``make_machine(now)``
    builds it at the loop's time. Whatever it queued at once is sent."""
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: _Transport(read_size), host, port)
    stream = SessionStream(make_machine(loop.time()), link, clock=loop.time)
    await stream.flush()
    return stream


async def connect(host: str, port: int, grant: Grant, config: CoreConfig | None = None, *,
                  rng: Rng = default_rng, read_size: int = READ_SIZE) -> SessionStream:
    """Open a TCP connection and start a :class:`PeerConnection` client on it."""
    return await open_stream(
        host, port, lambda now: PeerConnection.client(grant, config or CoreConfig(),
                                                      now=now, rng=rng),
        read_size=read_size)


async def run_handler(handler: Callable[[SessionStream], Awaitable[None]],
                      stream: SessionStream) -> None:
    """Run a server's ``handler`` for one accepted connection, then close it; a
    handler that fails is logged and its connection aborted, so one
    connection's bug never takes the listener down."""
    try:
        await handler(stream)
    except asyncio.CancelledError:  # the server is shutting down
        stream.abort()
        raise
    except Exception:
        log.exception("connection handler failed for %s", stream.peername)
        stream.abort()
        return
    await stream.close()


def start_handler(handler: Callable[[SessionStream], Awaitable[None]],
                  stream: SessionStream, source: str, gate: PreauthGate,
                  tasks: set[asyncio.Task[None]]) -> None:
    """Admit an accepted ``stream`` from ``source`` through ``gate`` (which may
    close older unauthenticated connections), then run ``handler`` for it
    (:func:`run_handler`) in a task kept in ``tasks``; when it ends, its slot in
    the gate is freed."""
    gate.admit(stream, source)
    task = asyncio.get_running_loop().create_task(run_handler(handler, stream))
    tasks.add(task)

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        gate.ended(stream)

    task.add_done_callback(done)


def budget_of(config: CoreConfig | Callable[[], CoreConfig]) -> Callable[[], int]:
    """The unauthenticated-connection budget of a (possibly changing) core config."""
    return lambda: (config() if callable(config) else config).session.max_pending


async def serve(host: str, port: int, registry: CredentialRegistry,
                handler: Callable[[SessionStream], Awaitable[None]],
                config: CoreConfig | Callable[[], CoreConfig] | None = None, *,
                limiter: RateLimiter | None = None, gate: PreauthGate | None = None,
                rng: Rng = default_rng, read_size: int = READ_SIZE) -> asyncio.Server:
    """Listen on TCP; each connection becomes a :class:`PeerConnection` server
    handed to ``handler`` (closed when the handler returns). ``limiter`` is
    keyed by the peer's IP address.

    Connections that have not authenticated yet pass ``gate``
    (:class:`~csembed.runtime.admission.PreauthGate`; by default one of this
    listener's own, with ``config.session.max_pending`` slots): beyond its
    budget a new one closes the oldest of the source address that has the most
    of them. Thus connections that never authenticate cost a bounded amount of
    memory and file descriptors, and a peer that holds a key or code gets in
    and completes. Pass one gate to every listener of a daemon (TCP and uTP) so
    that they share the budget. Authenticated connections are not counted
    (the connection manager limits those). ``config`` may be a function, asked
    at each connection (settings such as the device name change while
    listening)."""
    loop = asyncio.get_running_loop()
    settings = config or CoreConfig()
    if gate is None:
        gate = PreauthGate(budget_of(settings))
    tasks: set[asyncio.Task[None]] = set()

    def on_connect(link: _Transport) -> None:
        assert link.transport is not None
        peer = link.transport.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        current = settings() if callable(settings) else settings
        machine = PeerConnection.server(registry, current, now=loop.time(), rng=rng,
                                        limiter=limiter, source=source)
        start_handler(handler, SessionStream(machine, link, clock=loop.time), source, gate,
                      tasks)

    def factory() -> _Transport:
        link = _Transport(read_size)
        link.on_connect = on_connect
        return link

    return await loop.create_server(factory, host, port)
