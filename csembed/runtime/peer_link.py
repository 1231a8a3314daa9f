"""asyncio: one authenticated connection carrying one share.

Theory of operation
-------------------
A :class:`PeerLink` owns one :class:`~csembed.runtime.session_stream.SessionStream`
(TCP connection -> ``clearskies:2`` secure session -> core protocol; made by
:func:`connect_link` or, for accepted connections, by
:func:`~csembed.runtime.session_stream.serve` with :func:`link_handler`) and joins it
to the :class:`~csembed.runtime.share_runtime.ShareRuntime` of the share the
connection is for:

1. **Until Ready** it runs the core handshake: negotiation of the extensions
   (``database``, ``directory``, ``rsync`` and, when the board's
   ``cpu.gzip_level`` is not 0, ``gzip``) and, for a device joining with an
   access code, the key exchange -- ``on_keys`` must store the received keys
   before they are acknowledged. ``resolve(ready)`` then names the share's
   runtime (``None`` refuses the connection).
2. **Then two tasks** run until either ends. The *reader* pulls events from
   the session and hands messages and payload pieces to the runtime; with a
   download rate limiter it waits for the limiter after each piece, and since
   the session only reads the socket when it needs data, the peer is slowed
   down by TCP itself. The *writer* waits for the runtime's wake-up, pulls
   framed wire units from the engine (produced lazily: file data is read as
   the socket drains), passes each through the upload limiter and the core
   (gzip, encryption) and waits for the socket to drain. While the upload
   limiter limits (``rate > 0``) it drains after every unit, so the bytes
   leave the way the limiter spaces them; otherwise -- no limiter, or an
   unlimited one kept only for its throughput meter -- it drains once per
   batch of units, which keeps the socket's buffer full and the flush
   overhead off each unit.

   The reader does not yield to the writer after each received payload: it
   handles every event already buffered, so the requests freed by a burst of
   small files reach the engine together and the writer sends them as one
   batch, in one write; it yields anyway whenever it must wait for the socket.

**Replies backing up.** A peer that keeps sending requests but does not
read the replies would make the engine queue replies for it without end.
So before handing the runtime each message, the reader checks the engine's
backlog for this peer (``engine.outgoing_backlog(conn_id)``, bytes queued
and not yet sent); while it exceeds ``max_backlog`` the reader stops --
the socket is then not read, and TCP throttles the peer -- until the
writer drains it. If the backlog does not fall below the bound within
``stall_timeout`` seconds (by default the connection's keep-alive timeout),
the link is dropped with that reason logged.

The peer's access level is the level the connection authenticated with
(``Ready.access_level``); anything but ``read_write`` makes it a read-only
peer for the engine. Limiters are any object with ``async acquire(n)`` and
a ``rate`` (bytes per second, 0 for unlimited), such as
:class:`csembed.runtime.rate_limit.RateLimiter`; the rate is read per unit,
so a limit changed at run time takes effect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from csembed.board_profile import BoardProfile
from csembed.directory.engine import PeerInfo
from csembed.directory.sync_messages import PRESENT_MANY_EXTENSION
from csembed.protocol.core import (
    CoreConfig,
    Grant,
    KeysAcknowledged,
    KeysReceived,
    PeerConnection,
    Ready,
)
from csembed.protocol.wire import Limits, Message, PayloadChunk, PayloadEnd
from csembed.runtime.session_stream import SessionStream, connect
from csembed.runtime.share_runtime import ShareRuntime
from csembed.security.handshake import SessionClosed, SessionConfig, SessionFailed
from csembed.security.keys import READ_WRITE, Rng, default_rng

log = logging.getLogger("csembed.link")

SYNC_EXTENSIONS = ("database", "directory", "rsync", PRESENT_MANY_EXTENSION)
DEFAULT_MAX_BACKLOG = 4 << 20  #: bytes queued for a peer before we stop reading from it


def outgoing_backlog(engine: Any, conn_id: Any) -> int:
    """Bytes the engine holds for ``conn_id`` and has not handed out yet (0 if
    the engine cannot say)."""
    probe = getattr(engine, "outgoing_backlog", None)
    return 0 if probe is None else int(probe(conn_id))


class Limiter(Protocol):
    """A rate limiter: wait until ``n`` bytes may move."""

    @property
    def rate(self) -> float:
        """Bytes per second allowed; 0 means unlimited."""
        ...

    async def acquire(self, n: int) -> None: ...


DELIVERY_PIECE = 256 * 1024
"""Largest piece received data moves up in (records gathered per event, inflated
and payload pieces), capped by the board's ``io_buffer``: per piece the layers
above the record layer cost the same, so bigger pieces save the CPU that 64 KiB
records would cost ~16 times per MiB. Larger pieces fall out of the CPU's
cache between the copies each layer makes: in the bulk benchmark 1 MiB pieces
did no better than 256 KiB (and 128 KiB no worse, within the noise)."""


def core_config(board: BoardProfile, *, name: str | None = None,
                extensions: tuple[str, ...] = SYNC_EXTENSIONS) -> CoreConfig:
    """The core settings for sync connections on this board."""
    piece = min(board.memory.io_buffer, DELIVERY_PIECE)
    return CoreConfig(name=name, extensions=extensions, gzip_level=board.cpu.gzip_level,
                      ping_interval=board.network.ping_interval,
                      limits=Limits(max_body=board.memory.max_message,
                                    max_chunk=board.memory.max_message,
                                    max_delivery=piece),
                      session=SessionConfig(max_pending=board.memory.max_handshakes,
                                            max_batch=piece))


@dataclass
class LinkResult:
    """How a link ended."""

    ready: Ready | None  #: the negotiation result, if it got that far
    reason: str  #: why it ended


class PeerLink:
    """One connection, from handshake to close. See the module docstring.

    ``resolve(ready)`` returns the runtime of the share the connection is
    for; ``on_keys(event)`` stores keys received with an access code (it is
    awaited before the keys are acknowledged). ``max_unit_bytes`` is how much
    the writer pulls from the engine at once.
    """

    def __init__(self, stream: SessionStream, *,
                 resolve: Callable[[Ready], ShareRuntime | None],
                 on_keys: Callable[[KeysReceived], Awaitable[None]] | None = None,
                 upload: Limiter | None = None, download: Limiter | None = None,
                 max_unit_bytes: int = 1 << 20, max_backlog: int = DEFAULT_MAX_BACKLOG,
                 stall_timeout: float | None = None) -> None:
        self.stream = stream
        self.max_backlog = max_backlog
        self.stall_timeout = stall_timeout
        self._drained = asyncio.Event()  #: set by the writer after each flush
        self.resolve = resolve
        self.on_keys = on_keys
        self.upload = upload
        self.download = download
        self.max_unit_bytes = max_unit_bytes
        self.ready: Ready | None = None
        self.runtime: ShareRuntime | None = None
        self.bytes_in = 0  #: payload bytes received
        self.messages_in = 0  #: messages received after Ready (progress, for back-off)
        self.units_out = 0
        self.started = time.monotonic()

    @property
    def conn_id(self) -> Any:
        """This link's key in the share's engine: the link itself (a property, not
        an attribute naming itself, so that refcounting alone frees a link)."""
        return self

    def __repr__(self) -> str:
        peer = self.ready.peer_id[:8] if self.ready is not None else "?"
        return f"PeerLink(peer={peer}, {self.stream.peername})"

    async def run(self) -> LinkResult:
        """Handshake, then carry the share until the connection ends."""
        try:
            reason = await self._until_ready()
            if reason is not None:
                return LinkResult(self.ready, reason)
            assert self.ready is not None
            runtime = self.resolve(self.ready)
            if runtime is None:
                return LinkResult(self.ready, "no share for this connection")
            self.runtime = runtime
            return LinkResult(self.ready, await self._carry(runtime, self.ready))
        finally:
            await self.stream.close()

    async def _until_ready(self) -> str | None:
        while True:
            event = await self.stream.next_event()
            if event is None:
                return "closed before the handshake completed"
            if isinstance(event, SessionFailed):
                return f"handshake failed: {event.reason}"
            if isinstance(event, SessionClosed):
                return "closed before the handshake completed"
            if isinstance(event, KeysReceived):
                if self.on_keys is None:
                    return "received keys but nobody to store them"
                await self.on_keys(event)
                await self.stream.call("acknowledge_keys")
            elif isinstance(event, KeysAcknowledged):
                continue
            elif isinstance(event, Ready):
                self.ready = event
                return None

    async def _carry(self, runtime: ShareRuntime, ready: Ready) -> str:
        info = PeerInfo(ready.peer_id, ready.access_level != READ_WRITE,
                        frozenset(ready.extensions))
        wake = runtime.attach(self.conn_id, info)
        reader = asyncio.create_task(self._read(runtime))
        writer = asyncio.create_task(self._write(runtime, wake))
        try:
            done, _pending = await asyncio.wait({reader, writer},
                                                return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            reason = first.result() if first.exception() is None else repr(first.exception())
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            runtime.detach(self.conn_id)
        log.info("%r ended: %s", self, reason)
        return str(reason)

    async def _read(self, runtime: ShareRuntime) -> str:
        stream = self.stream
        while True:
            event = await stream.next_event()
            if event is None:
                return "connection closed"
            if isinstance(event, SessionFailed):
                return f"connection failed: {event.reason}"
            if isinstance(event, SessionClosed):
                return "peer closed the connection"
            if isinstance(event, Message | PayloadChunk | PayloadEnd):
                if isinstance(event, Message):
                    self.messages_in += 1
                    stalled = await self._wait_for_backlog(runtime)
                    if stalled is not None:
                        log.warning("%r dropped: %s", self, stalled)
                        return stalled
                runtime.receive(self.conn_id, event)
                dropped = getattr(runtime, "dropped", None)
                reason = None if dropped is None else dropped(self.conn_id)
                if reason is not None:  # the engine's own per-peer bounds were broken
                    log.warning("%r dropped: %s", self, reason)
                    return f"dropped: {reason}"
                if isinstance(event, PayloadChunk):
                    self.bytes_in += len(event.data)
                    if self.download is not None:
                        await self.download.acquire(len(event.data))


    async def _wait_for_backlog(self, runtime: ShareRuntime) -> str | None:
        """Wait while the replies queued for the peer exceed ``max_backlog``;
        the reason to drop the link if they do not drain in time."""
        backlog = outgoing_backlog(runtime.engine, self.conn_id)
        if backlog <= self.max_backlog:
            return None
        timeout = self.stall_timeout
        if timeout is None:
            timeout = getattr(self.stream.machine, "timeout", 600.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while backlog > self.max_backlog:
            self._drained.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._drained.wait()
            except TimeoutError:
                return (f"the peer does not read its replies ({backlog} bytes queued for "
                        f"it, over {self.max_backlog}, for {timeout:g} s)")
            backlog = outgoing_backlog(runtime.engine, self.conn_id)
        return None

    async def _write(self, runtime: ShareRuntime, wake: asyncio.Event) -> str:
        engine = runtime.engine
        machine = self.stream.machine
        assert isinstance(machine, PeerConnection)
        while True:
            if not engine.has_outgoing(self.conn_id):
                await wake.wait()
                wake.clear()
                continue
            units = engine.outgoing(self.conn_id, self.max_unit_bytes)
            if not units:
                await asyncio.sleep(0)  # the engine did work without output; let others run
                continue
            upload = self.upload
            for unit in units:
                if upload is not None:
                    # Even when unlimited: the limiter's meter feeds status's rates.
                    await upload.acquire(len(unit))
                machine.send_encoded(unit)
                if upload is not None and upload.rate > 0:
                    await self.stream.flush()
            self.units_out += len(units)
            await self.stream.flush()
            self._drained.set()


def link_handler(resolve: Callable[[Ready], ShareRuntime | None], *,
                 on_keys: Callable[[KeysReceived], Awaitable[None]] | None = None,
                 upload: Limiter | None = None, download: Limiter | None = None,
                 on_end: Callable[[LinkResult], None] | None = None,
                 **options: Any) -> Callable[[SessionStream], Awaitable[None]]:
    """A handler for :func:`csembed.runtime.session_stream.serve`: each accepted
    connection runs as a :class:`PeerLink` (``on_end`` gets how it ended;
    ``options`` are further :class:`PeerLink` arguments)."""
    async def handle(stream: SessionStream) -> None:
        link = PeerLink(stream, resolve=resolve, on_keys=on_keys, upload=upload,
                        download=download, **options)
        result = await link.run()
        if on_end is not None:
            on_end(result)
    return handle


async def connect_link(host: str, port: int, grant: Grant, config: CoreConfig, *,
                       resolve: Callable[[Ready], ShareRuntime | None],
                       on_keys: Callable[[KeysReceived], Awaitable[None]] | None = None,
                       upload: Limiter | None = None, download: Limiter | None = None,
                       rng: Rng = default_rng) -> PeerLink:
    """Connect to a peer under ``grant`` (a share key, or an access code being
    redeemed); run the returned link with :meth:`PeerLink.run`."""
    stream = await connect(host, port, grant, config, rng=rng)
    return PeerLink(stream, resolve=resolve, on_keys=on_keys, upload=upload,
                    download=download)
