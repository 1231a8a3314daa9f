"""asyncio adapter: uTP connections and STUN on one UDP socket.

Theory of operation
-------------------
:class:`UtpEndpoint` owns one UDP socket (dual-stack when bound to ``::``)
and every :class:`~csembed.transport.utp.UtpConnection` on it, keyed by the
peer's address and our receive ID. A datagram is STUN (answered to the
waiting :class:`~csembed.nat.stun.StunProbe`), or uTP: a SYN for a new key
becomes an accepted connection when the endpoint serves, anything for an
unknown key (other than a reset) is answered with ``ST_RESET``. The socket is
drained in batches of up to :data:`READ_BATCH` datagrams; after each batch
every connection it touched is *serviced* once: its datagrams go out (one ack
for the batch), its events go to the protocol above, and one loop timer is
re-armed at its ``get_timer()``.

Above each connection sits :class:`UtpTransport`, an ``asyncio.Transport``
with the calls a protocol uses (``write``, ``close``, ``abort``,
``pause_reading``/``resume_reading``, ``get_extra_info``, write-buffer
limits), so the TCP adapter's protocol in
:mod:`csembed.runtime.session_stream` and its :class:`SessionStream` run on
it unchanged: the secure session does not know it is on uTP. Back-pressure
both ways: while reading is paused the connection's events stay queued, so
its advertised window closes and the peer stops; while more than the
high-water mark is unacknowledged, the protocol is told to pause writing.

Because uTP and STUN share the socket, the public address a STUN server
reports is the one peers reach our uTP at, and dialling a peer's ``utp:``
address while it dials ours (both learned from the tracker) punches the
holes in both NATs: each side's SYNs open its own NAT for the other's,
repeated every second until one gets through.

*Memory* follows the board (:func:`board_limits`): each connection gets an
equal share of ``memory.max_bytes_in_flight`` over ``memory.max_connections``
as its receive window, congestion-window cap and write high-water mark, and
the socket holds at most ``max_connections + max_handshakes`` connections.
:func:`serve_utp` admits accepted ones through the same
:class:`~csembed.runtime.admission.PreauthGate` as the TCP listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from csembed.board_profile import MemoryLimits
from csembed.nat.stun import StunError, StunProbe, is_stun, parse_response
from csembed.protocol.core import CoreConfig, PeerConnection
from csembed.protocol.core_access import CredentialRegistry, Grant
from csembed.runtime.admission import PreauthGate
from csembed.runtime.session_stream import (
    READ_SIZE,
    SessionStream,
    _Transport,
    budget_of,
    start_handler,
)
from csembed.security.keys import Rng, default_rng
from csembed.security.rate_limit import RateLimiter
from csembed.transport.utp import Closed, Connected, Data, EndOfStream, UtpConfig, UtpConnection
from csembed.transport.utp_packet import (
    ST_RESET,
    ST_SYN,
    Packet,
    UtpPacketError,
    decode,
    encode,
    looks_like_utp,
)

__all__ = ["PUNCH", "UtpEndpoint", "UtpLimits", "UtpTransport", "board_limits", "connect_utp",
           "serve_utp"]

log = logging.getLogger("csembed.utp")

WRITE_HIGH = 1 << 20
READ_BATCH = 64
"""Datagrams read in one go before the connections they touched are serviced."""
MAX_CONNECTIONS = 256
"""uTP connections one socket holds (a SYN flood gets resets past this)."""
SOCKET_BUFFER = 4 << 20
"""Asked-for UDP socket buffers (the kernel caps them at net.core.[rw]mem_max)."""
PUNCH = b"\x00"
"""What we send only to open our own NAT towards a peer (nat.md); ignored on arrival."""

MIN_WINDOW_PACKETS = 4
"""A board's per-connection share never shrinks a window below this many packets."""

Address = tuple[str, int]


@dataclass(frozen=True)
class UtpLimits:
    """What a board allows one uTP socket: per-connection windows and a connection cap."""

    config: UtpConfig
    max_connections: int
    write_high: int


def board_limits(memory: MemoryLimits, base: UtpConfig | None = None) -> UtpLimits:
    """The uTP windows and connection cap a board's memory budget allows.

    One connection's share is ``max_bytes_in_flight // max_connections``; the
    receive window, the congestion-window cap and the write high-water mark are
    each the smaller of that share and ``base``'s figure (never below
    :data:`MIN_WINDOW_PACKETS` packets). Connections on the socket, handshaking
    or carrying, are capped at ``max_connections + max_handshakes`` (and
    :data:`MAX_CONNECTIONS`)."""
    base = base or UtpConfig()
    share = memory.max_bytes_in_flight // max(1, memory.max_connections)
    floor = MIN_WINDOW_PACKETS * base.packet_size
    config = dataclasses.replace(base, recv_window=max(floor, min(base.recv_window, share)),
                                 max_cwnd=max(floor, min(base.max_cwnd, share)))
    return UtpLimits(config=config,
                     max_connections=min(MAX_CONNECTIONS,
                                         memory.max_connections + memory.max_handshakes),
                     write_high=max(floor, min(WRITE_HIGH, share)))


def _plain(address: Any) -> Address:
    """(host, port) with an IPv4-mapped IPv6 host given as plain IPv4."""
    host, port = str(address[0]), int(address[1])
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            host = str(ip.ipv4_mapped)
    return host, port


class UtpTransport(asyncio.Transport):
    """One uTP connection as an asyncio transport (module docstring)."""

    def __init__(self, endpoint: UtpEndpoint, conn: UtpConnection, address: Address) -> None:
        super().__init__()
        self._endpoint = endpoint
        self.conn = conn
        self.address = address
        self._protocol: asyncio.BaseProtocol | None = None
        self._reading = True
        self._write_paused = False
        self._high = endpoint.write_high
        self._closing = False
        self._lost = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.connected: asyncio.Future[None] = endpoint.loop.create_future()

    # asyncio.Transport API -----------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.address
        if name == "sockname":
            return self._endpoint.local_address
        if name == "transport_kind":
            return "utp"
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._endpoint.loop.call_soon(self.service)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        cap = self._endpoint.write_high  # the board's share bounds any caller's figure
        self._high = cap if high is None else min(cap, high)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._high // 2, self._high

    def get_write_buffer_size(self) -> int:
        return self.conn.send_buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        if self._closing or self.conn.closed:
            return
        self.conn.send(data)
        self.service()
        if not self._write_paused and self.conn.send_buffered > self._high:
            self._write_paused = True
            if isinstance(self._protocol, asyncio.Protocol | asyncio.BufferedProtocol):
                self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self.conn.close()
            self.service()

    def abort(self) -> None:
        self._closing = True
        self.conn.abort()
        self.service()

    # driving the machine ------------------------------------------------------------------

    def service(self) -> None:
        """Send what the machine queued, hand its events up, re-arm the timer."""
        loop = self._endpoint.loop
        dispatched = False
        while self._reading or self.conn.closed:
            event = self.conn.next_event()
            if event is None:
                break
            dispatched = True
            self._dispatch(event)
        if self._closing and self.conn.fin_acked and not self._lost:
            # The application closed and everything it wrote was delivered: it is done,
            # while the connection lingers to acknowledge the peer's own FIN.
            self._lost = True
            if self._protocol is not None:
                self._protocol.connection_lost(None)
                self._protocol = None  # it holds us: let refcounting free both
        if self._write_paused and self.conn.send_buffered <= self._high // 2:
            self._write_paused = False
            if isinstance(self._protocol, asyncio.Protocol | asyncio.BufferedProtocol):
                self._protocol.resume_writing()
        now = loop.time()
        for datagram in self.conn.datagrams_to_send(now):
            self._endpoint.send_datagram(datagram, self.address)
        if dispatched:  # the protocol may have written in reply: send it with our ack
            for datagram in self.conn.datagrams_to_send(now):
                self._endpoint.send_datagram(datagram, self.address)
        timer = self.conn.get_timer()
        if timer != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = timer
            if timer is not None:
                self._timer = loop.call_at(timer, self._on_timer)
        if timer is None and self.conn.closed:
            self._endpoint.forget(self)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.conn.handle_timer(self._endpoint.loop.time())
        self.service()

    def _dispatch(self, event: object) -> None:
        protocol = self._protocol
        if self._lost and not isinstance(event, Closed):
            return  # the application is gone: nothing more to hand up
        if isinstance(event, Connected):
            if not self.connected.done():
                self.connected.set_result(None)
        elif isinstance(event, Data):
            if isinstance(protocol, asyncio.BufferedProtocol):
                view = memoryview(event.data)
                while view:
                    buffer = memoryview(protocol.get_buffer(len(view)))
                    n = min(len(buffer), len(view))
                    buffer[:n] = view[:n]
                    protocol.buffer_updated(n)
                    view = view[n:]
            elif isinstance(protocol, asyncio.Protocol):
                protocol.data_received(event.data)
        elif isinstance(event, EndOfStream):
            if isinstance(protocol, asyncio.Protocol | asyncio.BufferedProtocol):
                protocol.eof_received()
        elif isinstance(event, Closed):
            if not self.connected.done():
                self.connected.set_exception(ConnectionError(event.reason))
            self._endpoint.forget(self)
            if not self._lost and protocol is not None:
                self._lost = True
                self._protocol = None
                protocol.connection_lost(ConnectionError(event.reason) if event.error
                                         else None)


class UtpEndpoint:
    """One UDP socket carrying uTP connections and STUN probes (module docstring)."""

    def __init__(self, *, config: UtpConfig | None = None,
                 rng: Callable[[int], int] | None = None,
                 max_connections: int = MAX_CONNECTIONS, write_high: int = WRITE_HIGH,
                 limits: UtpLimits | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        if limits is not None:
            config, max_connections, write_high = (limits.config, limits.max_connections,
                                                   limits.write_high)
        self.max_connections = max_connections
        self.write_high = write_high
        self.config = config or UtpConfig()
        self._rng = rng or random.SystemRandom().randrange
        self.sock: socket.socket | None = None
        self._touched: dict[UtpTransport, None] = {}  #: to service after this batch
        self.local_address: Address = ("", 0)
        self._dual_stack = False
        self._conns: dict[tuple[Address, int], UtpTransport] = {}
        self._probes: dict[bytes, tuple[StunProbe, asyncio.Future[None]]] = {}
        self.on_accept: Callable[[UtpTransport], None] | None = None
        self.stats = {"datagrams_in": 0, "datagrams_out": 0, "malformed": 0,
                      "send_dropped": 0}
        self._plain_cache: dict[Any, Address] = {}

    @classmethod
    async def open(cls, host: str, port: int, **kwargs: Any) -> UtpEndpoint:
        """Bind a UDP socket; ``::`` (or ``""``) binds dual-stack IPv6+IPv4."""
        loop = asyncio.get_running_loop()
        if host in ("", "::"):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            dual = True
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            dual = False
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):  # room for a window's burst
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        try:
            sock.bind((host or "::", port))
        except OSError:
            sock.close()
            raise
        endpoint = cls(**kwargs)
        endpoint._dual_stack = dual
        sock.setblocking(False)
        endpoint.sock = sock
        endpoint.local_address = _plain(sock.getsockname())
        loop.add_reader(sock.fileno(), endpoint._readable)
        return endpoint

    # receiving ------------------------------------------------------------------------------

    def _readable(self) -> None:
        # Drain what the socket holds (bounded), then service each connection once:
        # one ack and one hand-up per batch instead of per datagram.
        assert self.sock is not None
        for _ in range(READ_BATCH):
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. an ICMP error for an earlier send
                log.debug("uTP socket error: %s", exc)
                continue
            self.datagram_received(data, addr)
        touched, self._touched = self._touched, {}
        for transport in touched:
            transport.service()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stats["datagrams_in"] += 1
        source = self._plain_cache.get(addr)
        if source is None:
            if len(self._plain_cache) > 1024:
                self._plain_cache.clear()
            source = self._plain_cache[addr] = _plain(addr)
        if is_stun(data):
            self._on_stun(data)
            return
        if not looks_like_utp(data):
            if data != PUNCH:
                self.stats["malformed"] += 1
            return
        try:
            packet = decode(data)
        except UtpPacketError:
            self.stats["malformed"] += 1
            return
        now = self.loop.time()
        if packet.type == ST_SYN:
            key = (source, (packet.connection_id + 1) & 0xFFFF)
            existing = self._conns.get(key)
            if existing is not None:
                existing.conn.receive_packet(packet, now)
                self._touched[existing] = None
            elif self.on_accept is not None and len(self._conns) < self.max_connections:
                conn = UtpConnection.accept(packet, now, self._rng, self.config)
                transport = UtpTransport(self, conn, source)
                self._conns[key] = transport
                self.on_accept(transport)
                transport.service()
            else:  # not serving, or full: say so at once rather than let the dialler wait
                self.send_datagram(encode(Packet(ST_RESET, packet.connection_id, 0, 0, 0, 0,
                                                 packet.seq_nr)), source)
            return
        known = self._conns.get((source, packet.connection_id))
        if known is None:
            if packet.type != ST_RESET:
                self.send_datagram(encode(Packet(ST_RESET, packet.connection_id, 0, 0, 0,
                                                 0, packet.seq_nr)), source)
            return
        known.conn.receive_packet(packet, now)
        self._touched[known] = None

    # sending -----------------------------------------------------------------------------

    def _wire_address(self, address: Address) -> Any:
        host, port = address
        if self._dual_stack and ":" not in host:
            return (f"::ffff:{host}", port, 0, 0)
        return (host, port)

    def send_datagram(self, data: bytes, address: Address) -> None:
        """Send one datagram (errors such as an unreachable host are only logged)."""
        if self.sock is None:
            return
        self.stats["datagrams_out"] += 1
        try:
            self.sock.sendto(data, self._wire_address(address))
        except BlockingIOError:  # the socket buffer is full: as good as lost on the way
            self.stats["send_dropped"] += 1
        except OSError as exc:
            log.debug("uTP send to %s failed: %s", address, exc)

    def forget(self, transport: UtpTransport) -> None:
        """Drop a finished connection from the table."""
        for key, value in list(self._conns.items()):
            if value is transport:
                del self._conns[key]

    @property
    def connections(self) -> int:
        return len(self._conns)

    # dialling ------------------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> Address:
        family = socket.AF_UNSPEC if self._dual_stack else (
            socket.AF_INET6 if ":" in self.local_address[0] else socket.AF_INET)
        infos = await self.loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        return _plain(infos[0][4])

    async def connect(self, host: str, port: int,
                      protocol_factory: Callable[[], asyncio.BaseProtocol]
                      ) -> tuple[UtpTransport, asyncio.BaseProtocol]:
        """Dial ``host:port``; returns once the peer answered (``ConnectionError`` if not)."""
        address = await self._resolve(host, port)
        if len(self._conns) >= self.max_connections:
            raise ConnectionError(f"uTP socket holds its {self.max_connections} connections")
        conn = UtpConnection.dial(self.loop.time(), self._rng, self.config)
        transport = UtpTransport(self, conn, address)
        self._conns[(address, conn.recv_id)] = transport
        try:
            transport.service()
            await transport.connected
        except BaseException:
            transport.abort()
            raise
        protocol = protocol_factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        transport.service()  # data that arrived with the answer
        return transport, protocol

    # STUN ----------------------------------------------------------------------------------

    def _on_stun(self, data: bytes) -> None:
        try:
            response = parse_response(data)
        except StunError as exc:
            log.debug("ignoring STUN datagram: %s", exc)
            return
        entry = self._probes.get(response.transaction_id)
        if entry is not None and entry[0].receive(response) and not entry[1].done():
            entry[1].set_result(None)

    async def stun(self, server: Address) -> Address:
        """Ask a STUN server which address it sees us at (``OSError`` if it does not say)."""
        address = await self._resolve(*server)
        probe = StunProbe(address, os.urandom(12), self.loop.time())
        done: asyncio.Future[None] = self.loop.create_future()
        self._probes[probe.transaction_id] = (probe, done)
        try:
            while not probe.done:
                now = self.loop.time()
                for datagram in probe.datagrams_to_send(now):
                    self.send_datagram(datagram, address)
                timer = probe.get_timer()
                if timer is None:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(timer):
                        await asyncio.shield(done)
                probe.handle_timer(self.loop.time())
        finally:
            del self._probes[probe.transaction_id]
        if probe.mapped is None:
            raise OSError(probe.error or "no STUN answer")
        return probe.mapped

    def close(self) -> None:
        """Reset every connection and close the socket."""
        for transport in list(self._conns.values()):
            transport.abort()
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


async def connect_utp(endpoint: UtpEndpoint, host: str, port: int, grant: Grant,
                      config: CoreConfig | None = None, *, rng: Rng = default_rng,
                      read_size: int = READ_SIZE) -> SessionStream:
    """Dial over uTP and start a :class:`PeerConnection` client on it (cf.
    :func:`csembed.runtime.session_stream.connect`)."""
    transport, link = await endpoint.connect(host, port, lambda: _Transport(read_size))
    assert isinstance(link, _Transport)
    loop = endpoint.loop
    machine = PeerConnection.client(grant, config or CoreConfig(), now=loop.time(), rng=rng)
    stream = SessionStream(machine, link, clock=loop.time)
    await stream.flush()
    return stream


def serve_utp(endpoint: UtpEndpoint, registry: CredentialRegistry,
              handler: Callable[[SessionStream], Awaitable[None]],
              config: CoreConfig | Callable[[], CoreConfig] | None = None, *,
              limiter: RateLimiter | None = None, gate: PreauthGate | None = None,
              rng: Rng = default_rng, read_size: int = READ_SIZE) -> None:
    """Accept uTP connections as :class:`PeerConnection` servers handed to ``handler``
    (cf. :func:`csembed.runtime.session_stream.serve`; ``config`` may be a function,
    asked at each connection). Unauthenticated ones pass ``gate``: give it the one
    the TCP listeners use, so that a flood on either transport counts against one
    budget."""
    loop = endpoint.loop
    settings = config or CoreConfig()
    if gate is None:
        gate = PreauthGate(budget_of(settings))
    tasks: set[asyncio.Task[None]] = set()

    def on_accept(transport: UtpTransport) -> None:
        link = _Transport(read_size)
        transport.set_protocol(link)
        link.connection_made(transport)
        current = settings() if callable(settings) else settings
        source = transport.address[0]
        machine = PeerConnection.server(registry, current, now=loop.time(), rng=rng,
                                        limiter=limiter, source=source)
        start_handler(handler, SessionStream(machine, link, clock=loop.time), source, gate,
                      tasks)

    endpoint.on_accept = on_accept
