"""A uTP connection (BEP 29) as a sans-I/O state machine.

Theory of operation
-------------------
One :class:`UtpConnection` is one end of one connection. It never touches a
socket or a clock: the adapter feeds it decoded packets
(:meth:`~UtpConnection.receive_packet`) and the time, takes the datagrams it
wants sent (:meth:`~UtpConnection.datagrams_to_send`), pulls events
(:meth:`~UtpConnection.next_event`: :class:`Connected`, :class:`Data`,
:class:`EndOfStream`, :class:`Closed`) and wakes it at
:meth:`~UtpConnection.get_timer`.

*Setup* (BEP 29): the dialler picks ``recv_id`` at random, sends ``ST_SYN``
under it and ``recv_id + 1`` as its send ID; the acceptor swaps them and
answers ``ST_STATE``. A SYN is repeated every ``syn_interval`` until answered
or ``connect_timeout`` passes, a fixed rather than growing interval so that
two peers dialling each other through NATs (hole punching) meet within
seconds.

*Sending*: application bytes wait in a buffer and are cut into packets of
``packet_size`` while the bytes in flight fit ``min(cwnd, peer window)``.
Every packet carries our cumulative ack and, when we hold packets out of
order, a selective-ack bitmask. A packet is sent again when three packets
after it were selectively acked, after three duplicate acks, or when the
retransmission timer (Jacobson's RTO, doubling, ``max_timeouts`` in a row
end the connection) fires.

*Congestion* (LEDBAT, RFC 6817 as BEP 29 applies it, with one deviation): each packet stamps our
clock in microseconds; the peer echoes the one-way delay it measured and we
subtract the lowest delay seen in the last two minutes, leaving the queueing
delay we cause. Below ``target_delay`` the window grows (by up to
``max_increase`` bytes per round trip, or doubling in slow start until the
first loss or the target is reached), above it shrinks; a loss halves it at
most once per round trip, *unless* we measure next to no queueing delay
(under a quarter of the target): then the loss is the link's noise (radio,
a lossy path), not congestion we cause, and the packet is only resent.
A timeout drops the window to one packet.

*Receiving*: in-order payloads become :class:`Data` events; packets ahead of
the next expected one wait in a bounded reorder buffer; the window we
advertise is what is left of ``recv_window`` after unread and reordered
bytes. *Closing*: ``ST_FIN`` after the buffered data; the peer's FIN becomes
:class:`EndOfStream` once everything before it arrived; ``ST_RESET`` ends the
connection at once. A ``ST_STATE`` keep-alive goes out after ``keepalive``
seconds of silence (it also keeps NAT mappings open); nothing heard for
``idle_timeout`` seconds ends the connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from csembed.transport.utp_packet import (
    HEADER_SIZE,
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    Packet,
    encode,
    seq_diff,
    seq_le,
)

__all__ = [
    "Closed",
    "Connected",
    "Data",
    "EndOfStream",
    "UtpConfig",
    "UtpConnection",
    "UtpError",
]


class UtpError(Exception):
    """A local misuse of a connection (sending after close)."""


@dataclass(frozen=True)
class UtpConfig:
    """Tunables of one connection (defaults suit a desktop on the internet)."""

    packet_size: int = 1200
    """Payload bytes per data packet: 1200 + headers fits IPv6's minimum MTU of 1280."""
    recv_window: int = 1 << 20
    """Bytes we buffer for the application (unread + out of order)."""
    max_cwnd: int = 4 << 20
    """Upper bound on the congestion window, in bytes."""
    target_delay: float = 0.1
    """LEDBAT's target queueing delay (BEP 29: 100 ms)."""
    max_increase: int = 3000
    """Bytes the window may grow per round trip outside slow start (libutp's figure)."""
    initial_rto: float = 1.0
    min_rto: float = 0.5
    max_rto: float = 8.0
    max_timeouts: int = 8
    """Retransmission timeouts in a row, with nothing heard, that end the connection."""
    syn_interval: float = 1.0
    connect_timeout: float = 12.0
    keepalive: float = 20.0
    """Silence after which a keep-alive goes out (under most NATs' 30 s UDP timeout)."""
    idle_timeout: float = 75.0
    linger: float = 60.0
    """Once our FIN is acked, silence for this long ends the connection; longer than
    ``max_rto``, so a peer still resending data to us is always heard first."""

    def __post_init__(self) -> None:
        if not 64 <= self.packet_size <= 65000:
            raise ValueError(f"packet_size {self.packet_size} is outside 64..65000")
        if self.recv_window < 2 * self.packet_size:
            raise ValueError("recv_window must hold at least two packets")
        if self.max_cwnd < 2 * self.packet_size:
            raise ValueError("max_cwnd must hold at least two packets")
        if self.linger <= self.max_rto:
            raise ValueError("linger must be longer than max_rto")


@dataclass(frozen=True)
class Connected:
    """The handshake finished; data may flow."""


@dataclass(frozen=True)
class Data:
    """In-order bytes from the peer."""

    data: bytes


@dataclass(frozen=True)
class EndOfStream:
    """The peer sent FIN and every byte before it arrived."""


@dataclass(frozen=True)
class Closed:
    """The connection is over; ``error`` is false only for a clean two-way close."""

    reason: str
    error: bool


Event = Connected | Data | EndOfStream | Closed

SYN_SENT, CONNECTED, CLOSED = "syn-sent", "connected", "closed"


@dataclass(eq=False)
class _Out:
    kind: int
    seq: int
    payload: bytes
    sent_at: float = 0.0
    transmissions: int = 0
    resend: bool = False
    sacked: bool = False
    counted: bool = False  #: its size is in the connection's bytes in flight

    @property
    def size(self) -> int:
        return HEADER_SIZE + len(self.payload)


def _micros(now: float) -> int:
    return int(now * 1_000_000) & 0xFFFFFFFF


class UtpConnection:
    """One end of a uTP connection; build with :meth:`dial` or :meth:`accept`."""

    def __init__(self, config: UtpConfig, now: float, *, recv_id: int, send_id: int,
                 seq_nr: int, state: str) -> None:
        self.config = config
        self.recv_id = recv_id
        self.send_id = send_id
        self.state = state
        self.seq_nr = seq_nr  #: the next sequence number we use
        self.ack_nr = 0  #: the last in-order sequence number received
        self._created = now
        self._events: deque[Event] = deque()
        self._unread = 0
        self._sendbuf = bytearray()
        self._inflight: dict[int, _Out] = {}
        self._flight = 0  #: bytes sent, not acked, not sacked, not waiting to be resent
        self._unacked_payload = 0
        self._reorder: dict[int, tuple[int, bytes]] = {}
        self._reorder_bytes = 0
        self._out: list[bytes] = []
        self._ack_due = False
        self._reply_micro = 0
        self.peer_wnd = config.packet_size * 2
        self.cwnd = float(2 * config.packet_size)
        self._ssthresh = float(config.max_cwnd)
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.rto = config.initial_rto
        self._rto_at: float | None = None
        self._timeouts = 0
        self._dup_acks = 0
        self._last_ack = (seq_nr - 1) & 0xFFFF
        self._recovery_until = -1.0
        self._delay_hist: deque[tuple[float, int]] = deque()  # (bucket start, min delay)
        self.our_delay = 0.0
        self._last_sent = now
        self._last_heard = now
        self._syn_at: float | None = None
        self._probe_at: float | None = None
        self._fin_wanted = False
        self._fin_seq: int | None = None
        self._fin_acked_at: float | None = None
        self._peer_fin: int | None = None
        self._eof = False
        self._initial_seq: int | None = None  #: the acceptor's first sequence number
        self.stats = {"sent": 0, "resent": 0, "received": 0, "timeouts": 0,
                      "noise_losses": 0}

    # -- construction -------------------------------------------------------------

    @classmethod
    def dial(cls, now: float, rng: Callable[[int], int],
             config: UtpConfig | None = None) -> UtpConnection:
        """A connection that sends ``ST_SYN``; ``rng(n)`` returns a random int below ``n``."""
        recv_id = rng(0x10000)
        conn = cls(config or UtpConfig(), now, recv_id=recv_id, send_id=(recv_id + 1) & 0xFFFF,
                   seq_nr=1, state=SYN_SENT)
        conn._send_new(ST_SYN, b"", now)
        conn._syn_at = now + conn.config.syn_interval
        return conn

    @classmethod
    def accept(cls, syn: Packet, now: float, rng: Callable[[int], int],
               config: UtpConfig | None = None) -> UtpConnection:
        """The answering end for a received ``ST_SYN``."""
        if syn.type != ST_SYN:
            raise ValueError("accept() needs an ST_SYN packet")
        conn = cls(config or UtpConfig(), now, recv_id=(syn.connection_id + 1) & 0xFFFF,
                   send_id=syn.connection_id, seq_nr=rng(0x10000), state=CONNECTED)
        conn.ack_nr = syn.seq_nr
        conn.peer_wnd = syn.wnd_size
        conn._reply_micro = (_micros(now) - syn.timestamp) & 0xFFFFFFFF
        conn._initial_seq = conn.seq_nr
        conn._out.append(conn._encode(ST_STATE, conn.seq_nr, b"", now))
        conn._events.append(Connected())
        return conn

    # -- application side ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    @property
    def fin_acked(self) -> bool:
        """Our FIN arrived: everything we sent is delivered."""
        return self._fin_acked_at is not None

    @property
    def send_buffered(self) -> int:
        """Bytes given to :meth:`send` and not yet acknowledged."""
        return len(self._sendbuf) + self._unacked_payload

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for the peer."""
        if self._fin_wanted or self.state == CLOSED:
            raise UtpError("cannot send on a closing uTP connection")
        self._sendbuf += data

    def close(self) -> None:
        """Send FIN after the buffered bytes (a dial not yet answered just ends)."""
        if self.state == SYN_SENT:
            self._finish("closed before connecting", error=True)
        self._fin_wanted = True

    def abort(self) -> None:
        """Send ``ST_RESET`` and end at once."""
        if self.state == CONNECTED:
            self._out.append(self._encode(ST_RESET, self.seq_nr, b"", 0.0))
        self._finish("aborted", error=True)

    def next_event(self) -> Event | None:
        """The next event, or ``None``."""
        if not self._events:
            return None
        event = self._events.popleft()
        if isinstance(event, Data):
            before = self._window()
            self._unread -= len(event.data)
            if before < self.config.packet_size <= self._window():
                self._ack_due = True  # tell a stalled sender the window opened
        return event

    # -- network side ----------------------------------------------------------------------

    def receive_packet(self, packet: Packet, now: float) -> None:
        """Feed one packet addressed to this connection."""
        if self.state == CLOSED:
            return
        self.stats["received"] += 1
        self._last_heard = now
        self._timeouts = 0
        self._reply_micro = (_micros(now) - packet.timestamp) & 0xFFFFFFFF
        if packet.type == ST_RESET:
            self._finish("reset by peer", error=True)
            return
        if packet.type == ST_SYN:
            if self._initial_seq is not None:  # our answer was lost: repeat it as it was
                self._out.append(self._encode(ST_STATE, self._initial_seq, b"", now))
            return
        if self.state == SYN_SENT:
            # Only the acceptor's ST_STATE tells where its sequence starts; data that
            # overtook it is dropped and comes again.
            if packet.type != ST_STATE:
                return
            self.state = CONNECTED
            self.ack_nr = (packet.seq_nr - 1) & 0xFFFF
            self._syn_at = None
            self._events.append(Connected())
        self.peer_wnd = packet.wnd_size
        self._on_ack(packet, now)
        if packet.type in (ST_DATA, ST_FIN):
            self._on_payload(packet)
        self._check_done(now)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything to put on the wire now."""
        if self.state == CONNECTED:
            self._fill(now)
        out, self._out = self._out, []
        if out:
            self._last_sent = now
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run, or ``None``."""
        if self.state == CLOSED:
            return None
        if self.state == SYN_SENT:
            assert self._syn_at is not None
            return min(self._syn_at, self._created + self.config.connect_timeout)
        times = [self._last_sent + self.config.keepalive,
                 self._last_heard + self.config.idle_timeout]
        for t in (self._rto_at, self._probe_at):
            if t is not None:
                times.append(t)
        if self._fin_acked_at is not None:
            times.append(self._last_heard + self.config.linger)
        return min(times)

    def handle_timer(self, now: float) -> None:
        """Retransmit, probe, keep alive or give up, as due."""
        if self.state == SYN_SENT:
            if now >= self._created + self.config.connect_timeout:
                self._finish("no answer to uTP connect", error=True)
            elif self._syn_at is not None and now >= self._syn_at:
                syn = self._inflight.get((self.seq_nr - 1) & 0xFFFF)
                if syn is not None:
                    self._transmit(syn, now)
                self._syn_at = now + self.config.syn_interval
            return
        if self.state == CLOSED:
            return
        if now >= self._last_heard + self.config.idle_timeout:
            self._finish("peer silent", error=True)
            return
        if self._fin_acked_at is not None and now >= self._last_heard + self.config.linger:
            self._finish("closed (peer sent no FIN)", error=False)
            return
        if self._rto_at is not None and now >= self._rto_at:
            self._on_timeout(now)
        if self._probe_at is not None and now >= self._probe_at:
            self._probe_at = None
            self._fill(now, probe=True)
        if self.state == CONNECTED and now >= self._last_sent + self.config.keepalive:
            self._ack_due = True

    # -- internals: sending -------------------------------------------------------------------

    def _window(self) -> int:
        return max(0, self.config.recv_window - self._unread - self._reorder_bytes)

    def _sack(self) -> bytes | None:
        if not self._reorder:
            return None
        bits = bytearray(4)
        for seq in self._reorder:
            i = seq_diff(seq, self.ack_nr) - 2
            if 0 <= i < 32 * 8:
                while i // 8 >= len(bits):
                    bits += bytes(4)
                bits[i // 8] |= 1 << (i % 8)
        return bytes(bits)

    def _encode(self, kind: int, seq: int, payload: bytes, now: float) -> bytes:
        conn = self.recv_id if kind == ST_SYN else self.send_id
        return encode(Packet(kind, conn, _micros(now), self._reply_micro, self._window(),
                             seq, self.ack_nr, payload, self._sack()))

    def _transmit(self, out: _Out, now: float) -> None:
        if out.transmissions:
            self.stats["resent"] += 1
        self.stats["sent"] += 1
        out.transmissions += 1
        out.sent_at = now
        out.resend = False
        self._recount(out)
        self._out.append(self._encode(out.kind, out.seq, out.payload, now))
        self._ack_due = False
        if self._rto_at is None:
            self._rto_at = now + self.rto

    def _send_new(self, kind: int, payload: bytes, now: float) -> None:
        out = _Out(kind, self.seq_nr, payload)
        self.seq_nr = (self.seq_nr + 1) & 0xFFFF
        self._inflight[out.seq] = out
        self._unacked_payload += len(out.payload)
        self._transmit(out, now)

    def _recount(self, out: _Out, present: bool = True) -> None:
        counted = present and not (out.sacked or out.resend)
        if counted != out.counted:
            self._flight += out.size if counted else -out.size
            out.counted = counted

    def _in_flight(self) -> int:
        return self._flight

    def _fill(self, now: float, probe: bool = False) -> None:
        limit = min(int(self.cwnd), self.peer_wnd)
        flight = self._in_flight()
        for out in self._inflight.values():
            if out.resend and not out.sacked:
                if flight and flight + out.size > max(limit, self.config.packet_size):
                    break
                self._transmit(out, now)
                flight += out.size
        while self._sendbuf and len(self._inflight) < 0x4000:
            size = min(len(self._sendbuf), self.config.packet_size)
            if flight + HEADER_SIZE + size > limit and not (flight == 0 and probe):
                if flight == 0 and self._probe_at is None:
                    self._probe_at = now + self.rto  # the peer's window is shut: probe later
                break
            payload = bytes(self._sendbuf[:size])
            del self._sendbuf[:size]
            self._send_new(ST_DATA, payload, now)
            flight += HEADER_SIZE + size
            probe = False
        if self._fin_wanted and not self._sendbuf and self._fin_seq is None:
            self._fin_seq = self.seq_nr
            self._send_new(ST_FIN, b"", now)
        if self._ack_due:
            self._out.append(self._encode(ST_STATE, self.seq_nr, b"", now))
            self._ack_due = False

    # -- internals: receiving -----------------------------------------------------------------

    def _on_payload(self, packet: Packet) -> None:
        self._ack_due = True
        ahead = seq_diff(packet.seq_nr, self.ack_nr)
        if ahead <= 0 or packet.seq_nr in self._reorder:
            return  # a duplicate: the ack we send is all it needs
        if self._peer_fin is not None and seq_diff(packet.seq_nr, self._peer_fin) > 0:
            return
        if ahead > 1 and (ahead > 0x2000 or self._reorder_bytes + len(packet.payload)
                          > self.config.recv_window):
            return  # out of window
        if ahead == 1 and (self._unread + self._reorder_bytes + len(packet.payload)
                           > self.config.recv_window):
            return  # past our window (a probe, or a sender ignoring it): the ack says so
        if packet.type == ST_FIN:
            self._peer_fin = packet.seq_nr
        self._reorder[packet.seq_nr] = (packet.type, packet.payload)
        self._reorder_bytes += len(packet.payload)
        while True:
            nxt = (self.ack_nr + 1) & 0xFFFF
            item = self._reorder.pop(nxt, None)
            if item is None:
                break
            kind, payload = item
            self._reorder_bytes -= len(payload)
            self.ack_nr = nxt
            if payload:
                self._unread += len(payload)
                self._events.append(Data(payload))
            if kind == ST_FIN and not self._eof:
                self._eof = True
                self._events.append(EndOfStream())
                self._reorder.clear()
                self._reorder_bytes = 0
                break

    def _on_ack(self, packet: Packet, now: float) -> None:
        ack = packet.ack_nr
        acked = 0
        progressed = False
        while self._inflight:
            seq = next(iter(self._inflight))
            if not seq_le(seq, ack):
                break
            out = self._inflight.pop(seq)
            self._unacked_payload -= len(out.payload)
            self._recount(out, present=False)
            progressed = True
            if not out.sacked:
                acked += out.size
            if out.transmissions == 1 and not out.sacked:
                self._rtt_sample(now - out.sent_at)
            if out.kind == ST_FIN and self._fin_acked_at is None:
                self._fin_acked_at = now
        if packet.sack is not None:
            acked += self._on_sack(ack, packet.sack, now)
        if progressed:
            self._dup_acks = 0
            self._last_ack = ack
            self.rto = self._computed_rto()
            self._rto_at = now + self.rto if self._inflight else None
        elif packet.type == ST_STATE and self._inflight and ack == self._last_ack \
                and packet.sack is None:
            self._dup_acks += 1
            if self._dup_acks == 3:
                first = next(iter(self._inflight.values()))
                first.resend = True
                self._recount(first)
                self._on_loss(now)
        if acked:
            self._probe_at = None
            self._congestion(acked, packet.timestamp_diff, now)

    def _on_sack(self, ack: int, bits: bytes, now: float) -> int:
        acked = 0
        highest = None
        for i in range(len(bits) * 8):
            if bits[i // 8] >> (i % 8) & 1:
                seq = (ack + 2 + i) & 0xFFFF
                highest = seq
                out = self._inflight.get(seq)
                if out is not None and not out.sacked:
                    out.sacked = True
                    self._recount(out)
                    acked += out.size
        if highest is None:
            return acked
        after = 0
        lost = False
        for out in reversed(list(self._inflight.values())):
            if seq_diff(out.seq, highest) > 0:
                continue
            if out.sacked:
                after += 1
            elif after >= 3 and not out.resend and now - out.sent_at > self._rtt_floor():
                out.resend = True
                self._recount(out)
                lost = True
        if lost:
            self._on_loss(now)
        return acked

    def _rtt_floor(self) -> float:
        return (self._srtt or self.config.initial_rto) / 2

    # -- internals: timing and congestion ------------------------------------------------------

    def _rtt_sample(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar += (abs(self._srtt - rtt) - self._rttvar) / 4
            self._srtt += (rtt - self._srtt) / 8

    def _computed_rto(self) -> float:
        if self._srtt is None:
            return self.config.initial_rto
        return min(self.config.max_rto, max(self.config.min_rto, self._srtt + 4 * self._rttvar))

    def _on_timeout(self, now: float) -> None:
        self.stats["timeouts"] += 1
        self._timeouts += 1
        if self._timeouts > self.config.max_timeouts:
            self._finish("peer stopped acknowledging", error=True)
            return
        for out in self._inflight.values():
            if not out.sacked:
                out.resend = True
                self._recount(out)
        self._ssthresh = max(self.cwnd / 2, 2.0 * self.config.packet_size)
        self.cwnd = float(self.config.packet_size + HEADER_SIZE)
        self.rto = min(self.config.max_rto, self.rto * 2)
        self._rto_at = now + self.rto if self._inflight else None

    def _on_loss(self, now: float) -> None:
        if now < self._recovery_until:
            return
        self._recovery_until = now + (self._srtt or self.config.initial_rto)
        if self.our_delay < self.config.target_delay / 4:
            # No queue builds up behind us, so this loss is the link's noise, not
            # congestion: resend without shrinking (a deviation from BEP 29, nat.md).
            self.stats["noise_losses"] += 1
            return
        self.cwnd = max(self.cwnd / 2, 2.0 * self.config.packet_size)
        self._ssthresh = self.cwnd

    def _congestion(self, acked: int, delay_micros: int, now: float) -> None:
        if delay_micros and delay_micros < 0x80000000:
            bucket = now // 60
            if self._delay_hist and self._delay_hist[-1][0] == bucket:
                if delay_micros < self._delay_hist[-1][1]:
                    self._delay_hist[-1] = (bucket, delay_micros)
            else:
                self._delay_hist.append((bucket, delay_micros))
                while self._delay_hist[0][0] < bucket - 2:
                    self._delay_hist.popleft()
            base = min(d for _, d in self._delay_hist)
            self.our_delay = (delay_micros - base) / 1_000_000
        target = self.config.target_delay
        if self.cwnd < self._ssthresh and self.our_delay < target / 2:
            self.cwnd += acked
        else:
            self._ssthresh = min(self._ssthresh, self.cwnd)
            off_target = (target - self.our_delay) / target
            self.cwnd += self.config.max_increase * off_target * acked / max(self.cwnd, 1.0)
        self.cwnd = min(float(self.config.max_cwnd),
                        max(self.cwnd, 2.0 * self.config.packet_size))

    # -- internals: ending ---------------------------------------------------------------------

    def _check_done(self, now: float) -> None:
        if self._fin_acked_at is not None and self._eof and not self._inflight:
            if self._ack_due:  # acknowledge the peer's FIN on the way out
                self._out.append(self._encode(ST_STATE, self.seq_nr, b"", now))
            self._finish("closed", error=False)

    def _finish(self, reason: str, *, error: bool) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._inflight.clear()
        self._flight = self._unacked_payload = 0
        self._sendbuf.clear()
        self._events.append(Closed(reason, error))
