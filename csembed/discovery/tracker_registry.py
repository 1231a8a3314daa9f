"""Server side of the tracker protocol, sans-I/O: every client and every club.

Theory of operation
-------------------
One :class:`TrackerRegistry` holds the whole tracker's state, because a club
spans connections. The runtime tells it about connections by number
(:meth:`~TrackerRegistry.open`, :meth:`~TrackerRegistry.receive_data`,
:meth:`~TrackerRegistry.connection_lost`), passes ``now`` with every call,
wakes it at :meth:`~TrackerRegistry.get_timer`, and after each call carries
out :meth:`~TrackerRegistry.pop_outputs`: :class:`SendData` (write bytes to a
connection) and :class:`CloseConnection` (close it; the registry has already
forgotten it). Per connection::

    (open) --greeting sent--> AWAIT_START --tracker.start--> ACTIVE
    AWAIT_START, ACTIVE --(violation, end of stream, silence, lost)--> gone

* AWAIT_START accepts only ``tracker.start`` (version 1; its TTL is clamped
  into ``min_ttl..max_ttl``), within ``start_timeout`` seconds.
* ACTIVE accepts ``tracker.connection`` (replaces the address list),
  ``tracker.register`` (replaces the club ID -> peer ID map) and
  ``tracker.ping``; unknown types are ignored. Any message counts as a sign
  of life: a client silent for its TTL is dropped.
* ``tracker.greeting``/``tracker.peers`` from a client, signed or payload
  messages, bad framing, malformed fields, more IDs or addresses than the
  configured limits, or more than ``max_updates`` connection/register
  messages per ``update_window`` end the connection.

A club is the set of ACTIVE clients that registered its ID. A member's view
of a club (the ``tracker.peers`` it gets) holds every *other* member that has
announced at least one address, keyed by the peer ID it registered for that
club; a member with the asker's own peer ID (the asker's previous, not yet
expired connection) is left out. Members claiming the same peer ID are merged
(addresses of the oldest connection first); peers are listed oldest
connection first, up to ``max_peers_per_message``, so a flood of newcomers
cannot push established peers out. Whenever membership, a peer ID or an
address list changes, the view of every member of the affected clubs is
recomputed and sent if it differs from the last one that member was sent;
a member is sent its view of a club it newly registered even when empty.
Clients only ever receive views of clubs they registered themselves.

Cost: a change in a club of N members costs O(N^2) work and N messages of
O(N) size; a tracker for friend-to-friend clubs expects small N.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from csembed import __version__
from csembed.discovery.addresses import format_ip
from csembed.discovery.errors import AddressError, TrackerError
from csembed.discovery.registration_proof import proven_ids
from csembed.discovery.tracker_messages import (
    MAX_ADDRESSES,
    MAX_IDS,
    MAX_PEERS,
    MAX_TTL,
    PROTOCOL_VERSION,
    TrackerConnection,
    TrackerGreeting,
    TrackerMessage,
    TrackerPeers,
    TrackerPing,
    TrackerRegister,
    TrackerStart,
    encode,
    message_from_body,
)
from csembed.protocol.wire import Decoder, Limits, Message, WireError

__all__ = [
    "CloseConnection",
    "Output",
    "SendData",
    "TrackerRegistry",
    "TrackerServerConfig",
]


@dataclass(frozen=True)
class TrackerServerConfig:
    """Limits and settings of a tracker server."""

    software: str = f"csembed tracker {__version__}"  #: sent in the greeting
    min_ttl: int = 60  #: shortest TTL a client may choose, seconds
    max_ttl: int = 3600  #: longest TTL a client may choose, seconds
    start_timeout: float = 30.0  #: seconds a new connection has to send tracker.start
    max_message: int = 256 * 1024  #: largest message body accepted from a client
    max_ids: int = 256  #: most club IDs one client may register
    max_addresses: int = 16  #: most addresses one client may announce
    max_peers_per_message: int = 256  #: most peers listed in one tracker.peers
    max_clients: int = 4096  #: connections beyond this are closed at once
    max_updates: int = 60  #: connection/register messages allowed per window
    update_window: float = 60.0  #: seconds of that window
    require_proof: bool = True  #: register only IDs whose registration proof checks out

    def __post_init__(self) -> None:
        def check(name: str, low: float, high: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"TrackerServerConfig.{name} must be a number")
            if not low <= value <= high:
                raise ValueError(f"TrackerServerConfig.{name}={value} is outside {low}..{high}")

        check("min_ttl", 1, MAX_TTL)
        check("max_ttl", self.min_ttl, MAX_TTL)
        check("start_timeout", 0.001, 3600)
        check("max_message", 1024, 16 << 20)
        check("max_ids", 1, MAX_IDS)
        check("max_addresses", 1, MAX_ADDRESSES)
        check("max_peers_per_message", 1, MAX_PEERS)
        check("max_clients", 1, 1 << 24)
        check("max_updates", 1, 1 << 20)
        check("update_window", 0.001, 86400)
        for name in ("min_ttl", "max_ttl", "max_message", "max_ids", "max_addresses",
                     "max_peers_per_message", "max_clients", "max_updates"):
            if not isinstance(getattr(self, name), int):
                raise TypeError(f"TrackerServerConfig.{name} must be an int")
        if not isinstance(self.software, str) or len(self.software) > 256:
            raise ValueError("TrackerServerConfig.software must be a string of <= 256 chars")


@dataclass(frozen=True)
class SendData:
    """Write ``data`` to connection ``conn``."""

    conn: int
    data: bytes


@dataclass(frozen=True)
class CloseConnection:
    """Close connection ``conn``; ``reason`` says why (for the log)."""

    conn: int
    reason: str


Output = SendData | CloseConnection
"""What :meth:`TrackerRegistry.pop_outputs` returns."""


class _State(Enum):
    AWAIT_START = "awaiting tracker.start"
    ACTIVE = "active"


class _Client:
    """Everything the registry keeps about one connection."""

    __slots__ = ("addresses", "conn", "deadline", "decoder", "ids", "ip", "sent",
                 "state", "timer_at", "ttl", "updates", "window_start")

    def __init__(self, conn: int, ip: str | None, limits: Limits, deadline: float) -> None:
        self.conn = conn
        self.ip = ip
        self.decoder = Decoder(limits)
        self.state = _State.AWAIT_START
        self.ttl = 0
        self.deadline = deadline  # dropped when now >= deadline
        self.timer_at = deadline  # deadline of this client's one live heap entry
        self.addresses: tuple[str, ...] = ()
        self.ids: dict[str, str] = {}  # club ID -> peer ID
        self.sent: dict[str, int] = {}  # club ID -> hash of the last view sent
        self.updates = 0
        self.window_start = 0.0


_ALLOWED: Final[dict[type, frozenset[_State]]] = {
    TrackerStart: frozenset({_State.AWAIT_START}),
    TrackerConnection: frozenset({_State.ACTIVE}),
    TrackerRegister: frozenset({_State.ACTIVE}),
    TrackerPing: frozenset({_State.ACTIVE}),
    TrackerGreeting: frozenset(),
    TrackerPeers: frozenset(),
}
"""Which message may arrive in which state; a known type elsewhere is a violation."""


class TrackerRegistry:
    """The tracker's clients and clubs. See the module docstring."""

    def __init__(self, config: TrackerServerConfig | None = None) -> None:
        self.config = config or TrackerServerConfig()
        self._limits = Limits(max_body=self.config.max_message, max_chunk=1, max_signature=4)
        self._clients: dict[int, _Client] = {}
        self._clubs: dict[str, dict[int, str]] = {}  # club ID -> {conn: peer ID}
        # (deadline, conn). A client's live entry is the one matching its timer_at;
        # others are stale and skipped. Deadlines that move later are re-pushed when
        # their entry comes up; one that moves earlier (at tracker.start) is pushed anew.
        self._timers: list[tuple[float, int]] = []
        self._outputs: list[Output] = []
        self._next_conn = 1
        self.refused_ids = 0  #: IDs left unregistered for want of a valid proof

    # -- introspection -----------------------------------------------------

    @property
    def client_count(self) -> int:
        """Connections currently open (greeted or active)."""
        return len(self._clients)

    @property
    def club_count(self) -> int:
        """Club IDs with at least one registered member."""
        return len(self._clubs)

    def members(self, club_id: str) -> dict[int, str]:
        """Connection -> peer ID of the members of ``club_id`` (a copy)."""
        return dict(self._clubs.get(club_id.lower(), {}))

    # -- connections -------------------------------------------------------

    def open(self, remote_ip: str | None, now: float) -> int:
        """A client connected from ``remote_ip``; returns its connection number.

        Queues the greeting, or a :class:`CloseConnection` if the server is full.
        """
        conn = self._next_conn
        self._next_conn += 1
        if len(self._clients) >= self.config.max_clients:
            self._outputs.append(CloseConnection(conn, "server full"))
            return conn
        ip: str | None
        try:
            ip = format_ip(remote_ip) if remote_ip else None
        except AddressError:
            ip = None
        client = _Client(conn, ip, self._limits, now + self.config.start_timeout)
        self._clients[conn] = client
        self._push_timer(client)
        greeting = TrackerGreeting(
            min_ttl=self.config.min_ttl, max_ttl=self.config.max_ttl,
            protocol=(PROTOCOL_VERSION,), your_ip=ip, software=self.config.software,
        )
        self._outputs.append(SendData(conn, encode(greeting)))
        return conn

    def receive_data(self, conn: int, data: bytes, now: float) -> None:
        """Bytes from ``conn``; ``b""`` is the end of its stream."""
        client = self._clients.get(conn)
        if client is None:
            return
        try:
            client.decoder.receive_data(data)
            for event in client.decoder.events():
                if not isinstance(event, Message) or event.has_payload or event.signature:
                    raise TrackerError("only plain 'm' messages belong on a tracker connection")
                self._on_message(client, message_from_body(event.body), event.type, now)
                if conn not in self._clients:
                    return
        except (TrackerError, WireError) as exc:
            self._drop(client, f"protocol violation: {exc}", now)
            return
        if not data:
            self._drop(client, "closed by client", now)

    def connection_lost(self, conn: int, now: float) -> None:
        """The runtime saw ``conn`` fail or close; forget it."""
        client = self._clients.get(conn)
        if client is not None:
            self._drop(client, "connection lost", now, close=False)

    def pop_outputs(self) -> list[Output]:
        """Everything to carry out since the last call, in order."""
        out, self._outputs = self._outputs, []
        return out

    # -- time --------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` has work, or ``None``."""
        timers = self._timers
        while timers and self._stale(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def _stale(self, entry: tuple[float, int]) -> bool:
        client = self._clients.get(entry[1])
        return client is None or client.timer_at != entry[0]

    def _push_timer(self, client: _Client) -> None:
        client.timer_at = client.deadline
        heapq.heappush(self._timers, (client.deadline, client.conn))

    def handle_timer(self, now: float) -> None:
        """Drop every client whose deadline (start timeout or TTL) has passed."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if self._stale(entry):
                continue
            client = self._clients[entry[1]]
            if client.deadline > now:
                self._push_timer(client)
            elif client.state is _State.AWAIT_START:
                self._drop(client, "no tracker.start in time", now)
            else:
                self._drop(client, f"silent for longer than its TTL of {client.ttl} s", now)
        if len(self._timers) > 2 * len(self._clients) + 64:
            self._timers = [(c.timer_at, c.conn) for c in self._clients.values()]
            heapq.heapify(self._timers)

    # -- messages ----------------------------------------------------------

    def _on_message(self, client: _Client, message: TrackerMessage | None, kind: str,
                    now: float) -> None:
        if message is None:
            if client.state is _State.AWAIT_START:
                raise TrackerError(f"expected tracker.start, got {kind[:60]!r}")
            return  # unknown type while active: ignored for forward compatibility
        if client.state not in _ALLOWED[type(message)]:
            raise TrackerError(f"{kind} is not allowed from a client {client.state.value}")
        if client.state is _State.ACTIVE:
            client.deadline = now + client.ttl
        if isinstance(message, TrackerStart):
            self._on_start(client, message, now)
        elif isinstance(message, TrackerConnection | TrackerRegister):
            self._count_update(client, now)
            if isinstance(message, TrackerConnection):
                self._on_connection(client, message)
            else:
                self._on_register(client, message)

    def _on_start(self, client: _Client, message: TrackerStart, now: float) -> None:
        if message.protocol != PROTOCOL_VERSION:
            raise TrackerError(f"client asked for tracker protocol {message.protocol}; "
                               f"this tracker speaks {PROTOCOL_VERSION}")
        # We offer no extensions, so any the client asks for stay off.
        client.ttl = max(self.config.min_ttl, min(self.config.max_ttl, message.ttl))
        client.state = _State.ACTIVE
        client.deadline = now + client.ttl
        client.window_start = now
        if client.deadline < client.timer_at:
            self._push_timer(client)

    def _count_update(self, client: _Client, now: float) -> None:
        if now - client.window_start >= self.config.update_window:
            client.window_start = now
            client.updates = 0
        client.updates += 1
        if client.updates > self.config.max_updates:
            raise TrackerError(f"more than {self.config.max_updates} connection/register "
                               f"messages in {self.config.update_window:g} s")

    def _on_connection(self, client: _Client, message: TrackerConnection) -> None:
        if len(message.addresses) > self.config.max_addresses:
            raise TrackerError(f"{len(message.addresses)} addresses, over this tracker's "
                               f"limit of {self.config.max_addresses}")
        if message.addresses == client.addresses:
            return
        client.addresses = message.addresses
        self._refresh(client.ids)

    def _on_register(self, client: _Client, message: TrackerRegister) -> None:
        if len(message.ids) > self.config.max_ids:
            raise TrackerError(f"{len(message.ids)} IDs registered, over this tracker's "
                               f"limit of {self.config.max_ids}")
        old, new = client.ids, dict(message.ids)
        if self.config.require_proof:
            proven = proven_ids(new, message.proofs)
            self.refused_ids += len(new) - len(proven)
            new = proven
        changed = [club for club in old if club not in new]
        for club in changed:
            self._leave(client, club)
        for club, peer in new.items():
            if old.get(club) != peer:
                self._clubs.setdefault(club, {})[client.conn] = peer
                changed.append(club)
        client.ids = new
        self._refresh(changed)

    # -- clubs -------------------------------------------------------------

    def _leave(self, client: _Client, club: str) -> None:
        members = self._clubs.get(club)
        if members is not None:
            members.pop(client.conn, None)
            if not members:
                del self._clubs[club]
        client.sent.pop(club, None)

    def _drop(self, client: _Client, reason: str, now: float, *, close: bool = True) -> None:
        del self._clients[client.conn]
        clubs = list(client.ids)
        for club in clubs:
            self._leave(client, club)
        client.ids = {}
        if close:
            self._outputs.append(CloseConnection(client.conn, reason))
        self._refresh(clubs)

    def _view(self, club: str, members: dict[int, str], asker: int) -> TrackerPeers:
        own = members[asker]
        limit_peers = self.config.max_peers_per_message
        limit_addresses = 2 * self.config.max_addresses
        peers: dict[str, list[str]] = {}
        for conn in sorted(members):
            peer = members[conn]
            addresses = self._clients[conn].addresses
            if conn == asker or peer == own or not addresses:
                continue
            merged = peers.get(peer)
            if merged is None:
                if len(peers) >= limit_peers:
                    continue
                merged = peers[peer] = []
            for address in addresses:
                if address not in merged and len(merged) < limit_addresses:
                    merged.append(address)
        return TrackerPeers(club, {peer: tuple(a) for peer, a in peers.items()})

    def _refresh(self, clubs: Iterable[str]) -> None:
        """Send every member of ``clubs`` its view if it changed since last sent."""
        for club in dict.fromkeys(clubs):
            members = self._clubs.get(club)
            if not members:
                continue
            for conn in sorted(members):
                data = encode(self._view(club, members, conn))
                digest = hash(data)
                client = self._clients[conn]
                if client.sent.get(club) != digest:
                    client.sent[club] = digest
                    self._outputs.append(SendData(conn, data))
