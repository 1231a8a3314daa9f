"""LAN broadcast announcements: the datagram codec and when to send, sans-I/O.

Theory of operation
-------------------
A daemon tells its LAN which clubs it serves by broadcasting one UDP datagram
per club ID to port 60106 (core.md, "LAN Broadcast"). The payload is a JSON
object::

    {"name":"ClearSkiesBroadcast","version":1,"id":"<64 hex>","peer":"<32 hex>","myport":40121}

``id`` is an access ID or key ID, ``peer`` our peer ID for that club, and
``myport`` the TCP port we accept peer connections on; the receiver takes the
host from the datagram's source address.

:class:`Announcement` is that object in the one message style
(:mod:`csembed.protocol.body_message`; the ``name`` member plays the part
of ``type``): ``to_body()`` and ``from_body()``. The two functions are only
the datagram's framing, as ``protocol.wire`` is a stream's:
:func:`encode_announcement` writes the body as compact JSON, and
:func:`decode_announcement` treats every datagram as hostile: anything
larger than :data:`MAX_DATAGRAM`, not UTF-8 JSON, not an object, with another
``name`` (some other program on the port), another ``version`` (the broadcast
is versioned on its own, and a version we do not know is not ours to guess
at), or a bad ``id``/``peer``/``myport`` raises :class:`BroadcastError`, which
the listener counts and drops. Unknown members are ignored.

:class:`AnnounceSchedule` decides when to send a round (all IDs): at start,
``interval`` seconds after the last round, and soon after :meth:`poke`
(a new club, a new access code, a new network) -- but never two rounds less
than ``min_gap`` apart, so a burst of pokes costs one round.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from csembed.discovery.addresses import read_club_id, read_peer_id
from csembed.discovery.errors import AddressError, BroadcastError
from csembed.protocol.body_message import BodyMessage

__all__ = [
    "BROADCAST_NAME",
    "BROADCAST_VERSION",
    "LAN_PORT",
    "MAX_DATAGRAM",
    "AnnounceSchedule",
    "Announcement",
    "decode_announcement",
    "encode_announcement",
]

LAN_PORT: Final = 60106
"""UDP port of ClearSkies LAN broadcasts (core.md)."""
BROADCAST_NAME: Final = "ClearSkiesBroadcast"
BROADCAST_VERSION: Final = 1
MAX_DATAGRAM: Final = 512
"""Largest datagram we parse; a valid announcement is about 170 bytes."""


@dataclass(frozen=True)
class Announcement(BodyMessage):
    """One club announced: club ``id``, our ``peer`` ID for it, our TCP ``port``."""

    TYPE = BROADCAST_NAME
    id: str
    peer: str
    port: int

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "id", read_club_id(self.id, "announcement id"))
            object.__setattr__(self, "peer", read_peer_id(self.peer, "announcement peer"))
        except AddressError as exc:
            raise BroadcastError(str(exc)) from None
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise BroadcastError(f"announcement myport must be an integer, "
                                 f"got {type(self.port).__name__}")
        if not 1 <= self.port <= 65535:
            raise BroadcastError(f"announcement myport {self.port} is outside 1..65535")

    def to_body(self) -> dict[str, Any]:
        return {"name": self.TYPE, "version": BROADCAST_VERSION, "id": self.id,
                "peer": self.peer, "myport": self.port}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Announcement:
        if body.get("name") != cls.TYPE:
            raise BroadcastError(f"datagram name is {str(body.get('name'))[:40]!r}, "
                                 f"not {cls.TYPE!r}")
        version = body.get("version")
        if isinstance(version, bool) or version != BROADCAST_VERSION:
            raise BroadcastError(f"broadcast version {str(version)[:20]} is not "
                                 f"{BROADCAST_VERSION}")
        for key in ("id", "peer", "myport"):
            if key not in body:
                raise BroadcastError(f"announcement lacks {key!r}")
        return cls(id=body["id"], peer=body["peer"], port=body["myport"])


def encode_announcement(announcement: Announcement) -> bytes:
    """The datagram payload for ``announcement`` (compact JSON, UTF-8)."""
    return json.dumps(announcement.to_body(), separators=(",", ":")).encode("ascii")


def _refuse(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def decode_announcement(data: bytes) -> Announcement:
    """Parse and check a received datagram; :class:`BroadcastError` if it is not one."""
    if len(data) > MAX_DATAGRAM:
        raise BroadcastError(f"datagram of {len(data)} bytes is over {MAX_DATAGRAM}")
    try:
        body: Any = json.loads(data.decode("utf-8"), parse_constant=_refuse)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BroadcastError(f"datagram is not UTF-8 JSON: {str(exc)[:80]}") from None
    if not isinstance(body, dict):
        raise BroadcastError("datagram is not a JSON object")
    return Announcement.from_body(body)


class AnnounceSchedule:
    """When the next round of announcements is due. See the module docstring.

    A fresh schedule is due at once. After each round call :meth:`sent`.
    """

    def __init__(self, interval: float = 60.0, min_gap: float = 1.0) -> None:
        if not 0 < min_gap <= interval:
            raise ValueError("AnnounceSchedule needs 0 < min_gap <= interval")
        self.interval = interval
        self.min_gap = min_gap
        self._next: float | None = None  # None: due at once
        self._last: float | None = None

    def due(self, now: float) -> bool:
        """True if a round should go out at ``now``."""
        return self._next is None or now >= self._next

    def sent(self, now: float) -> None:
        """A round went out at ``now``."""
        self._last = now
        self._next = now + self.interval

    def poke(self, now: float) -> None:
        """Something changed: send a round soon (at most one per ``min_gap``)."""
        soon = now if self._last is None else max(now, self._last + self.min_gap)
        self._next = soon if self._next is None else min(self._next, soon)

    def get_timer(self) -> float | None:
        """When the next round is due; ``None`` means now."""
        return self._next
