"""Client side of one tracker connection, sans-I/O.

Theory of operation
-------------------
:class:`TrackerSession` is the state machine of a single TCP connection to a
tracker. The runtime feeds it the bytes it reads (``receive_data(data, now)``),
pulls events (:meth:`~TrackerSession.next_event` until ``NEED_DATA``), writes
whatever :meth:`~TrackerSession.data_to_send` returns, and wakes it at
:meth:`~TrackerSession.get_timer` with :meth:`~TrackerSession.handle_timer`.
States::

    AWAIT_GREETING --tracker.greeting--> ACTIVE --(error or end of stream)--> CLOSED
    AWAIT_GREETING --(error or end of stream)--> CLOSED

On the greeting the session checks that the tracker speaks version 1,
clamps its wanted TTL into ``min_ttl..max_ttl`` and queues ``tracker.start``,
then ``tracker.connection`` and ``tracker.register`` with the current
addresses and IDs. While ACTIVE, :meth:`set_addresses` and :meth:`set_ids`
queue a complete new message when (and only when) the set changed, and a
``tracker.ping`` goes out every TTL/2 so the registration never lapses even if
one ping is delayed.

Each ``tracker.peers`` becomes a :class:`PeersUpdate` with parsed
:class:`~csembed.discovery.addresses.PeerAddress` lists. The session drops,
without failing: peers of a club it has not registered (a reply still in
flight after a re-registration, or a confused tracker -- we never let one
club's peers leak into another), its own peer ID, unknown address schemes and
malformed addresses. Anything structurally wrong -- bad framing, a first
message that is not a greeting, a greeting without version 1, a malformed
known message, signed or payload-carrying messages -- raises
:class:`TrackerError` and the session is CLOSED; the runtime drops the
connection and reconnects later. Unknown message types are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from csembed.discovery.addresses import (
    PeerAddress,
    check_address_text,
    parse_known_addresses,
    read_club_id,
    read_peer_id,
)
from csembed.discovery.errors import AddressError, TrackerError
from csembed.discovery.registration_proof import proof_hex
from csembed.discovery.tracker_messages import (
    MAX_ADDRESSES,
    MAX_IDS,
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
from csembed.protocol.jsonvalues import is_strict_int
from csembed.protocol.wire import NEED_DATA, Decoder, Limits, Message, NeedData, WireError

__all__ = [
    "DEFAULT_TTL",
    "PeersUpdate",
    "SessionState",
    "TrackerGreeted",
    "TrackerSession",
    "normalize_addresses",
    "normalize_ids",
]

DEFAULT_TTL: Final = 300
"""TTL a client asks for unless told otherwise: stale entries vanish within 5 minutes."""
DEFAULT_MAX_MESSAGE: Final = 1 << 20
"""Largest message body accepted from a tracker (a busy club's peers list)."""


class SessionState(Enum):
    """Where the connection is."""

    AWAIT_GREETING = "awaiting greeting"
    ACTIVE = "active"
    CLOSED = "closed"


@dataclass(frozen=True)
class TrackerGreeted:
    """The tracker greeted us; ``ttl`` is the TTL we chose within its bounds."""

    greeting: TrackerGreeting
    ttl: int


@dataclass(frozen=True)
class PeersUpdate:
    """Everything the tracker now knows about one club (replaces earlier news).

    ``peers`` maps peer ID -> addresses we can use (known schemes only);
    peers left with no usable address are omitted. ``skipped`` counts the
    address strings dropped as unknown or malformed.
    """

    club_id: str
    peers: Mapping[str, tuple[PeerAddress, ...]]
    skipped: int = 0


SessionEvent = TrackerGreeted | PeersUpdate
"""What :meth:`TrackerSession.next_event` returns besides ``NEED_DATA``."""


def normalize_ids(ids: Mapping[str, str]) -> dict[str, str]:
    """Check and lower-case a club ID -> peer ID map (``AddressError`` if bad)."""
    if len(ids) > MAX_IDS:
        raise AddressError(f"{len(ids)} IDs to register, over the limit of {MAX_IDS}")
    return {read_club_id(club, "club id"): read_peer_id(peer, f"peer id for {club}")
            for club, peer in ids.items()}


def normalize_addresses(addresses: Iterable[str | PeerAddress]) -> tuple[str, ...]:
    """Our own addresses as strings, checked and de-duplicated in order."""
    out: list[str] = []
    for item in addresses:
        text = check_address_text(str(item), "own address")
        if text not in out:
            out.append(text)
    if len(out) > MAX_ADDRESSES:
        raise AddressError(f"{len(out)} addresses, over the limit of {MAX_ADDRESSES}")
    return tuple(out)


class TrackerSession:
    """One tracker connection, client side. See the module docstring.

    ``ids`` (club ID -> our peer ID) and ``addresses`` are the initial
    registration; ``ttl`` the TTL we would like (clamped by the greeting).
    """

    def __init__(
        self,
        *,
        ids: Mapping[str, str] | None = None,
        addresses: Iterable[str | PeerAddress] = (),
        ttl: int = DEFAULT_TTL,
        software: str = "",
        max_message: int = DEFAULT_MAX_MESSAGE,
        proofs: Mapping[str, bytes] | None = None,
    ) -> None:
        if not is_strict_int(ttl) or ttl < 1:
            raise ValueError(f"ttl must be a positive int, got {ttl!r}")
        self._ids = normalize_ids(ids or {})
        self._proofs: dict[str, bytes] = dict(proofs or {})
        self._addresses = normalize_addresses(addresses)
        self._wanted_ttl = ttl
        self._software = software
        self._decoder = Decoder(Limits(max_body=max_message, max_chunk=1, max_signature=4))
        self._out = bytearray()
        self._state = SessionState.AWAIT_GREETING
        self._greeting: TrackerGreeting | None = None
        self._ttl = 0
        self._next_ping: float | None = None
        self._now = 0.0
        self._eof = False

    # -- properties --------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """AWAIT_GREETING, ACTIVE or CLOSED."""
        return self._state

    @property
    def ttl(self) -> int:
        """The negotiated TTL in seconds (0 before the greeting)."""
        return self._ttl

    @property
    def greeting(self) -> TrackerGreeting | None:
        """The tracker's greeting, once received."""
        return self._greeting

    @property
    def ids(self) -> Mapping[str, str]:
        """The club ID -> peer ID map currently registered (or to be)."""
        return dict(self._ids)

    @property
    def addresses(self) -> tuple[str, ...]:
        """Our addresses currently announced (or to be)."""
        return self._addresses

    # -- input -------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the tracker; ``b""`` means the stream ended."""
        self._now = now
        if self._state is SessionState.CLOSED:
            return
        if not data:
            self._eof = True
        try:
            self._decoder.receive_data(data)
        except WireError as exc:
            self._close()
            raise TrackerError(f"tracker stream: {exc}") from None

    def next_event(self) -> SessionEvent | NeedData:
        """Next event, or ``NEED_DATA``. Raises :class:`TrackerError` on a violation."""
        while self._state is not SessionState.CLOSED:
            try:
                event = self._decoder.next_event()
            except WireError as exc:
                self._close()
                raise TrackerError(f"tracker stream: {exc}") from None
            if event is NEED_DATA:
                if self._eof:
                    self._close()
                return NEED_DATA
            if not isinstance(event, Message) or event.has_payload or event.signature:
                self._close()
                raise TrackerError("tracker sent a signed or payload message; "
                                   "only plain 'm' messages belong on a tracker connection")
            try:
                message = message_from_body(event.body)
                out = self._handle(message, event.type)
            except TrackerError:
                self._close()
                raise
            if out is not None:
                return out
        return NEED_DATA

    def _handle(self, message: TrackerMessage | None, kind: str) -> SessionEvent | None:
        if self._state is SessionState.AWAIT_GREETING:
            if not isinstance(message, TrackerGreeting):
                raise TrackerError(f"expected tracker.greeting first, got {kind[:60]!r}")
            return self._on_greeting(message)
        if isinstance(message, TrackerPeers):
            return self._on_peers(message)
        if isinstance(message, TrackerGreeting):
            raise TrackerError("tracker sent a second tracker.greeting")
        # Unknown types and client-to-server types are ignored: forward compatibility.
        return None

    def _on_greeting(self, greeting: TrackerGreeting) -> TrackerGreeted:
        if PROTOCOL_VERSION not in greeting.protocol:
            raise TrackerError(f"tracker speaks protocol versions {list(greeting.protocol)}, "
                               f"not {PROTOCOL_VERSION}")
        self._greeting = greeting
        self._ttl = greeting.clamp_ttl(self._wanted_ttl)
        self._state = SessionState.ACTIVE
        self._queue(TrackerStart(ttl=self._ttl, software=self._software))
        self._queue(TrackerConnection(self._addresses))
        self._queue(self._register())
        self._next_ping = self._now + self._ttl / 2
        return TrackerGreeted(greeting, self._ttl)

    def _on_peers(self, message: TrackerPeers) -> PeersUpdate | None:
        own = self._ids.get(message.id)
        if own is None:
            return None
        peers: dict[str, tuple[PeerAddress, ...]] = {}
        skipped = 0
        for peer, texts in message.peers.items():
            if peer == own:
                continue
            addresses, bad = parse_known_addresses(texts)
            skipped += bad
            if addresses:
                peers[peer] = addresses
        return PeersUpdate(message.id, peers, skipped)

    # -- output ------------------------------------------------------------

    def _queue(self, message: TrackerMessage) -> None:
        self._out += encode(message)

    def data_to_send(self) -> bytes:
        """Bytes queued for the tracker since the last call (may be empty)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _register(self) -> TrackerRegister:
        proofs = {club: proof_hex(self._proofs[club]) for club in self._ids
                  if club in self._proofs}
        return TrackerRegister(self._ids, proofs)

    def set_ids(self, ids: Mapping[str, str], proofs: Mapping[str, bytes] | None = None) -> bool:
        """Replace the registered set (and the proofs for its IDs: the preimages of
        :mod:`~csembed.discovery.registration_proof`); queue ``tracker.register``
        if it changed.

        Returns whether it changed. Before the greeting it only updates what
        will be sent then.
        """
        new = normalize_ids(ids)
        new_proofs = dict(proofs) if proofs is not None else self._proofs
        if new == self._ids and new_proofs == self._proofs:
            return False
        self._ids = new
        self._proofs = new_proofs
        if self._state is SessionState.ACTIVE:
            self._queue(self._register())
        return True

    def set_addresses(self, addresses: Iterable[str | PeerAddress]) -> bool:
        """Replace our address list; queue ``tracker.connection`` if it changed."""
        new = normalize_addresses(addresses)
        if new == self._addresses:
            return False
        self._addresses = new
        if self._state is SessionState.ACTIVE:
            self._queue(TrackerConnection(new))
        return True

    # -- time --------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (the next ping), or ``None``."""
        return self._next_ping if self._state is SessionState.ACTIVE else None

    def handle_timer(self, now: float) -> None:
        """Queue a ping if one is due at ``now``."""
        self._now = now
        if (self._state is SessionState.ACTIVE and self._next_ping is not None
                and now >= self._next_ping):
            self._queue(TrackerPing())
            self._next_ping = now + self._ttl / 2

    def _close(self) -> None:
        self._state = SessionState.CLOSED
        self._next_ping = None
