"""Tracker protocol v1 messages: frozen dataclasses that validate themselves.

Theory of operation
-------------------
A tracker connection is a plain byte stream of wire-format messages
(``csembed.protocol.wire``); only unsigned ``m`` messages without payloads are
used. Six message types exist (core.md, "Tracker Protocol")::

    tracker.greeting    server -> client  first message; TTL bounds, your_ip, versions
    tracker.start       client -> server  chosen version, TTL and extensions
    tracker.connection  client -> server  every address the client listens on
    tracker.register    client -> server  every club ID it wants peers for -> its peer ID
    tracker.peers       server -> client  one club: peer ID -> addresses
    tracker.ping        client -> server  "still here"

Each type is a dataclass here in the one message style
(:mod:`csembed.protocol.body_message`), checked when built (whether by us or by
:func:`message_from_body` from a peer's JSON): types, ID syntax, address
syntax, and counts and lengths bounded by the module constants, which are
hard ceilings -- a server applies its own, usually lower, limits on top.
Unknown JSON members are ignored (forward compatibility); a missing required
member or a wrong type is a :class:`TrackerError` naming the message and the
field. :func:`message_from_body` returns ``None`` for an unknown ``type`` so
each side can decide whether that is fatal.

IDs come out in lower case; addresses stay verbatim strings (the tracker
relays them); clients parse them with ``addresses.parse_known_addresses``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from csembed.discovery.addresses import (
    check_address_text,
    format_ip,
    parse_ip,
    read_club_id,
    read_peer_id,
)
from csembed.discovery.errors import AddressError, TrackerError
from csembed.discovery.registration_proof import MAX_PROOF_BYTES
from csembed.protocol.body_message import BodyMessage, build_from_body, encode, message_table
from csembed.protocol.jsonvalues import is_strict_int

__all__ = [
    "MAX_ADDRESSES",
    "MAX_IDS",
    "MAX_PEERS",
    "MAX_TTL",
    "MESSAGES",
    "PROTOCOL_VERSION",
    "TrackerConnection",
    "TrackerGreeting",
    "TrackerMessage",
    "TrackerPeers",
    "TrackerPing",
    "TrackerRegister",
    "TrackerStart",
    "encode",
    "message_from_body",
]

PROTOCOL_VERSION: Final = 1
"""The tracker protocol major version this module speaks."""
MAX_TTL: Final = 31 * 86400
"""Largest TTL we accept in either direction, in seconds."""
MAX_TEXT: Final = 256
"""Longest ``software`` string or extension name."""
MAX_LIST: Final = 32
"""Most entries in ``protocol`` and ``extensions`` lists."""
MAX_ADDRESSES: Final = 64
"""Most addresses in one connection message or for one peer."""
MAX_IDS: Final = 4096
"""Most IDs in one register message."""
MAX_PEERS: Final = 4096
"""Most peers in one peers message."""


def _fail(message: str, what: str) -> TrackerError:
    return TrackerError(f"{message}: {what}")


def _int(value: Any, what: str, low: int, high: int) -> int:
    if not is_strict_int(value):
        raise TrackerError(f"{what} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise TrackerError(f"{what} = {value} is outside {low}..{high}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TrackerError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise TrackerError(f"{what} is {len(value)} characters, over the limit of {MAX_TEXT}")
    return value


def _list(value: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise TrackerError(f"{what} must be a list, got {type(value).__name__}")
    if len(value) > limit:
        raise TrackerError(f"{what} has {len(value)} entries, over the limit of {limit}")
    return list(value)


def _object(value: Any, what: str, limit: int) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TrackerError(f"{what} must be an object, got {type(value).__name__}")
    if len(value) > limit:
        raise TrackerError(f"{what} has {len(value)} entries, over the limit of {limit}")
    return value


def _texts(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_text(item, f"{what}[{i}]") for i, item in enumerate(_list(value, what, MAX_LIST)))


def _address_list(value: Any, what: str) -> tuple[str, ...]:
    out: list[str] = []
    for i, item in enumerate(_list(value, what, MAX_ADDRESSES)):
        try:
            text = check_address_text(item, f"{what}[{i}]")
        except AddressError as exc:
            raise TrackerError(str(exc)) from None
        if text not in out:
            out.append(text)
    return tuple(out)


def _id(check: Callable[[Any, str], str], value: Any, what: str) -> str:
    try:
        return check(value, what)
    except AddressError as exc:
        raise TrackerError(str(exc)) from None


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class TrackerGreeting(BodyMessage):
    """``tracker.greeting``: the server's TTL bounds, versions and view of us.

    ``your_ip`` is the client's address as the server sees it, without
    brackets, or ``None`` if the server gave none (or something unparsable:
    the field is informational, so a garbled one is dropped, not fatal).
    """

    TYPE = "tracker.greeting"
    min_ttl: int
    max_ttl: int
    protocol: tuple[int, ...] = (PROTOCOL_VERSION,)
    your_ip: str | None = None
    software: str = ""
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _int(self.min_ttl, "tracker.greeting min_ttl", 1, MAX_TTL)
        _int(self.max_ttl, "tracker.greeting max_ttl", 1, MAX_TTL)
        if self.min_ttl > self.max_ttl:
            raise TrackerError(f"tracker.greeting min_ttl {self.min_ttl} "
                               f"is above max_ttl {self.max_ttl}")
        versions = _list(self.protocol, "tracker.greeting protocol", MAX_LIST)
        _set(self, "protocol", tuple(_int(v, "tracker.greeting protocol[]", 0, 1 << 31)
                                     for v in versions))
        _text(self.software, "tracker.greeting software")
        _set(self, "extensions", _texts(self.extensions, "tracker.greeting extensions"))
        if self.your_ip is not None:
            try:
                _set(self, "your_ip", parse_ip(self.your_ip, "tracker.greeting your_ip"))
            except AddressError as exc:
                raise TrackerError(str(exc)) from None

    def clamp_ttl(self, wanted: int) -> int:
        """``wanted`` brought inside ``min_ttl..max_ttl``."""
        return max(self.min_ttl, min(self.max_ttl, wanted))

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.TYPE, "software": self.software, "max_ttl": self.max_ttl,
            "min_ttl": self.min_ttl, "protocol": list(self.protocol),
            "extensions": list(self.extensions),
        }
        if self.your_ip is not None:
            body["your_ip"] = format_ip(self.your_ip)
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackerGreeting:
        for key in ("min_ttl", "max_ttl", "protocol"):
            if key not in body:
                raise _fail("tracker.greeting lacks a required member", key)
        your_ip = body.get("your_ip")
        if your_ip is not None:
            try:
                your_ip = parse_ip(your_ip)
            except AddressError:
                your_ip = None
        return cls(min_ttl=body["min_ttl"], max_ttl=body["max_ttl"], protocol=body["protocol"],
                   your_ip=your_ip, software=body.get("software", ""),
                   extensions=body.get("extensions", ()))


@dataclass(frozen=True)
class TrackerStart(BodyMessage):
    """``tracker.start``: the version, TTL and extensions the client chose."""

    TYPE = "tracker.start"
    ttl: int
    protocol: int = PROTOCOL_VERSION
    extensions: tuple[str, ...] = ()
    software: str = ""

    def __post_init__(self) -> None:
        _int(self.protocol, "tracker.start protocol", 0, 1 << 31)
        # The server clamps the TTL, so any non-negative integer is tolerated here.
        _int(self.ttl, "tracker.start ttl", 0, 1 << 31)
        _set(self, "extensions", _texts(self.extensions, "tracker.start extensions"))
        _text(self.software, "tracker.start software")

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "software": self.software, "protocol": self.protocol,
                "ttl": self.ttl, "extensions": list(self.extensions)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackerStart:
        for key in ("protocol", "ttl"):
            if key not in body:
                raise _fail("tracker.start lacks a required member", key)
        return cls(ttl=body["ttl"], protocol=body["protocol"],
                   extensions=body.get("extensions", ()), software=body.get("software", ""))


@dataclass(frozen=True)
class TrackerConnection(BodyMessage):
    """``tracker.connection``: the complete list of the client's addresses."""

    TYPE = "tracker.connection"
    addresses: tuple[str, ...]

    def __post_init__(self) -> None:
        _set(self, "addresses", _address_list(self.addresses, "tracker.connection addresses"))

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "addresses": list(self.addresses)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackerConnection:
        if "addresses" not in body:
            raise _fail("tracker.connection lacks a required member", "addresses")
        return cls(addresses=body["addresses"])


@dataclass(frozen=True)
class TrackerRegister(BodyMessage):
    """``tracker.register``: club ID -> our peer ID, replacing any earlier set."""

    TYPE = "tracker.register"
    ids: Mapping[str, str] = field(default_factory=dict)
    proofs: Mapping[str, str] = field(default_factory=dict)
    """csembed: club ID -> registration proof, lowercase hex (see
    :mod:`csembed.discovery.registration_proof`); only IDs in ``ids``."""

    def __post_init__(self) -> None:
        given = _object(self.ids, "tracker.register ids", MAX_IDS)
        ids: dict[str, str] = {}
        for key, value in given.items():
            club = _id(read_club_id, key, "tracker.register ids key")
            ids[club] = _id(read_peer_id, value, f"tracker.register ids[{club[:16]}...]")
        _set(self, "ids", ids)
        proofs: dict[str, str] = {}
        for key, value in _object(self.proofs, "tracker.register proofs", MAX_IDS).items():
            club = _id(read_club_id, key, "tracker.register proofs key")
            if club not in ids:
                raise _fail("tracker.register proofs names an ID not in ids", club[:16])
            if not isinstance(value, str) or not 2 <= len(value) <= 2 * MAX_PROOF_BYTES:
                raise _fail("tracker.register proof must be a hex string of at most "
                            f"{2 * MAX_PROOF_BYTES} characters", club[:16])
            proofs[club] = value.lower()
        _set(self, "proofs", proofs)

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.TYPE, "ids": dict(self.ids)}
        if self.proofs:
            body["proofs"] = dict(self.proofs)
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackerRegister:
        if "ids" not in body:
            raise _fail("tracker.register lacks a required member", "ids")
        return cls(ids=body["ids"], proofs=body.get("proofs", {}))


@dataclass(frozen=True)
class TrackerPeers(BodyMessage):
    """``tracker.peers``: every known peer of one club, replacing earlier news of it.

    ``peers`` maps peer ID -> address strings exactly as the peer sent them.
    """

    TYPE = "tracker.peers"
    id: str
    peers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _set(self, "id", _id(read_club_id, self.id, "tracker.peers id"))
        given = _object(self.peers, "tracker.peers peers", MAX_PEERS)
        peers: dict[str, tuple[str, ...]] = {}
        for key, value in given.items():
            peer = _id(read_peer_id, key, "tracker.peers peers key")
            addresses = _list(value, f"tracker.peers peers[{peer}]", MAX_ADDRESSES)
            # Address strings are parsed (and bad ones skipped) by the client;
            # here we only insist they are strings of bounded length.
            for i, item in enumerate(addresses):
                if not isinstance(item, str) or len(item) > 1024:
                    raise TrackerError(f"tracker.peers peers[{peer}][{i}] "
                                       "must be a string of at most 1024 characters")
            peers[peer] = tuple(addresses)
        _set(self, "peers", peers)

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id,
                "peers": {peer: list(addresses) for peer, addresses in self.peers.items()}}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackerPeers:
        for key in ("id", "peers"):
            if key not in body:
                raise _fail("tracker.peers lacks a required member", key)
        return cls(id=body["id"], peers=body["peers"])


@dataclass(frozen=True)
class TrackerPing(BodyMessage):
    """``tracker.ping``: keeps the client's registration alive."""

    TYPE = "tracker.ping"

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackerPing:
        return cls()


TrackerMessage = (TrackerGreeting | TrackerStart | TrackerConnection | TrackerRegister
                  | TrackerPeers | TrackerPing)
"""Any of the six tracker messages."""

MESSAGES: Final[Mapping[str, type[TrackerMessage]]] = message_table(
    (TrackerGreeting, TrackerStart, TrackerConnection, TrackerRegister, TrackerPeers,
     TrackerPing))
"""``type`` -> message class, for the six tracker messages."""


def message_from_body(body: Mapping[str, Any]) -> TrackerMessage | None:
    """Build the message a decoded JSON body holds; ``None`` for an unknown type.

    Raises :class:`TrackerError` when a known type is malformed.
    """
    return build_from_body(MESSAGES, body)
