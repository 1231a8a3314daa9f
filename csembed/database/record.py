"""Records: one version of a key-value entry, as stored and as sent.

Theory of operation
-------------------
A :class:`Record` is one *version* written by one peer: the draft's fields
(``key``, ``value``, ``uuid``, ``last_updated_by``, ``last_updated_rev``,
``update_time``, ``vector_clock``, ``deleted``) plus the exact JSON body bytes
it travels as (``raw``) and, when known, the read-write Ed25519 signature over
those bytes. It is also the ``database.update`` message, in the one message
style (:mod:`csembed.protocol.body_message`), as :class:`GetUpdates` is
``database.get_updates``; :data:`MESSAGES` maps the types to the classes.
``(last_updated_by, last_updated_rev)`` -- the record's *dot* -- names the
write uniquely: a peer never reuses a revision.

Relaying never re-encodes: the stored ``raw`` goes out byte for byte, so
signatures stay valid and fields this version of csembed does not know about
reach peers that might.

:meth:`Record.from_body` is the single gate for update bodies from peers.
It checks every field (types, 32-hex-digit IDs, signed 64-bit ranges, the ISO
8601 timestamp, the clock's shape and size, ``vector_clock[last_updated_by]
== last_updated_rev``) and raises
:class:`~csembed.database.errors.InvalidUpdate` naming the field;
:meth:`GetUpdates.from_body` does the same for a ``since`` map.
:meth:`Record.to_body` makes the body of a local write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from csembed.database.errors import InvalidUpdate
from csembed.database.vector_clock import INT64_MAX, VectorClock, is_peer_id
from csembed.protocol.body_message import BodyMessage, message_table
from csembed.protocol.jsonvalues import (
    JsonValueError,
    format_timestamp,
    is_strict_int,
    parse_timestamp,
)
from csembed.protocol.wire import encode_body

__all__ = [
    "MESSAGES",
    "GetUpdates",
    "Limits",
    "Record",
    "check_key",
    "check_value",
]


@dataclass(frozen=True)
class Limits:
    """Bounds on what a peer may send and what the replica does per call.

    ``max_key_bytes`` bounds a key's UTF-8 length, ``max_clock_entries`` a
    vector clock, ``max_since_entries`` a ``get_updates`` map,
    ``max_versions`` the concurrent versions kept for one record (a flood of
    siblings is refused), ``batch`` the messages emitted for one connection
    per call.
    """

    max_key_bytes: int = 4096
    max_clock_entries: int = 1024
    max_since_entries: int = 65536
    max_versions: int = 256
    batch: int = 64

    def __post_init__(self) -> None:
        for name in ("max_key_bytes", "max_clock_entries", "max_since_entries",
                     "max_versions", "batch"):
            value = getattr(self, name)
            if not is_strict_int(value) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


_DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True)
class Record(BodyMessage):
    """One version of a record; ``update_time`` is nanoseconds since the epoch (UTC).

    ``local_only`` marks a change made on a read-only peer, which never leaves
    it. ``raw`` and ``signature`` are the exact bytes to relay (``to_body``
    is what a local write's ``raw`` is encoded from).
    """

    TYPE = "database.update"
    key: str
    value: Any = field(hash=False)
    uuid: str
    last_updated_by: str
    last_updated_rev: int
    update_time: int
    vector_clock: VectorClock
    deleted: bool
    raw: bytes = field(repr=False, compare=False)
    signature: bytes | None = field(default=None, repr=False, compare=False)
    local_only: bool = field(default=False, compare=False)

    @property
    def dot(self) -> tuple[str, int]:
        """``(last_updated_by, last_updated_rev)``: the write's unique name."""
        return (self.last_updated_by, self.last_updated_rev)

    @property
    def update_time_text(self) -> str:
        """``update_time`` in canonical ISO 8601 form."""
        return format_timestamp(self.update_time)

    @property
    def live(self) -> bool:
        """Not a tombstone."""
        return not self.deleted

    def to_body(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "key": self.key,
            "value": self.value,
            "uuid": self.uuid,
            "last_updated_by": self.last_updated_by,
            "last_updated_rev": self.last_updated_rev,
            "update_time": format_timestamp(self.update_time),
            "vector_clock": self.vector_clock.to_json(),
            "deleted": self.deleted,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any], raw: bytes | None = None,
                  signature: bytes | None = None,
                  limits: Limits = _DEFAULT_LIMITS) -> Record:
        """Check a ``database.update`` body from a peer; ``raw`` is the exact body bytes
        it came as (encoded afresh when not given) and ``signature`` their signature."""
        if body.get("type") != cls.TYPE:
            raise InvalidUpdate(f"is {body.get('type')!r}, expected {cls.TYPE!r}", "type")
        key = check_key(body.get("key"), limits)
        value = body.get("value")
        check_value(value)
        uuid = _check_id(body.get("uuid"), "uuid")
        author = _check_id(body.get("last_updated_by"), "last_updated_by")
        rev = _check_count(body.get("last_updated_rev"), "last_updated_rev", 1)
        try:
            update_time = parse_timestamp(body.get("update_time"), "update_time")
        except JsonValueError as exc:
            raise InvalidUpdate(str(exc)) from None
        clock = VectorClock.from_json(
            body.get("vector_clock"), max_entries=limits.max_clock_entries
        )
        if clock.get(author) != rev:
            raise InvalidUpdate(
                f"entry for last_updated_by is {clock.get(author)}, must equal "
                f"last_updated_rev {rev} (each write names itself in its clock)",
                "vector_clock",
            )
        deleted = body.get("deleted", False)
        if not isinstance(deleted, bool):
            raise InvalidUpdate(f"must be true or false, got {type(deleted).__name__}",
                                "deleted")
        return cls(
            key=key,
            value=value,
            uuid=uuid,
            last_updated_by=author,
            last_updated_rev=rev,
            update_time=update_time,
            vector_clock=clock,
            deleted=deleted,
            raw=raw if raw is not None else encode_body(dict(body)),
            signature=signature,
        )


@dataclass(frozen=True)
class GetUpdates(BodyMessage):
    """``database.get_updates``: send me every record newer than ``since``.

    ``since`` maps peer ID -> the highest revision of that peer's writes the
    sender already holds.
    """

    TYPE = "database.get_updates"
    since: Mapping[str, int]

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "since": dict(self.since)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any],
                  limits: Limits = _DEFAULT_LIMITS) -> GetUpdates:
        value = body.get("since")
        if not isinstance(value, dict):
            raise InvalidUpdate(f"must be a JSON object, got {type(value).__name__}", "since")
        if len(value) > limits.max_since_entries:
            raise InvalidUpdate(
                f"has {len(value)} entries, more than {limits.max_since_entries}", "since"
            )
        since: dict[str, int] = {}
        for peer, rev in value.items():
            _check_id(peer, "since key")
            since[peer] = _check_count(rev, f"since[{peer}]", 0)
        return cls(since)


MESSAGES: Final[Mapping[str, type[Record | GetUpdates]]] = message_table((Record, GetUpdates))
"""``type`` -> class for the two database messages."""


def check_key(key: Any, limits: Limits, what: str = "key") -> str:
    """Return ``key`` if it is a non-empty string of bounded UTF-8 length."""
    if not isinstance(key, str):
        raise InvalidUpdate(f"must be a string, got {type(key).__name__}", what)
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidUpdate("holds a lone surrogate", what) from None
    if not 0 < size <= limits.max_key_bytes:
        raise InvalidUpdate(f"is {size} bytes long, must be 1..{limits.max_key_bytes}", what)
    return key


def check_value(value: Any, what: str = "value") -> str:
    """Return ``value`` as compact ASCII JSON text, or raise InvalidUpdate."""
    try:
        return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidUpdate(f"is not storable JSON ({str(exc)[:60]})", what) from None


def _check_id(value: Any, what: str) -> str:
    if not is_peer_id(value):
        raise InvalidUpdate("must be 32 lower-case hex digits", what)
    return str(value)


def _check_count(value: Any, what: str, low: int) -> int:
    if not is_strict_int(value):
        raise InvalidUpdate(f"must be an integer, got {type(value).__name__}", what)
    if not low <= value <= INT64_MAX:
        raise InvalidUpdate(f"= {value} is outside {low}..2**63-1", what)
    return value
