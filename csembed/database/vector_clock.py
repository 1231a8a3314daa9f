"""Vector clocks as version vectors of writes.

Theory of operation
-------------------
A record's ``vector_clock`` maps peer IDs to counters. csembed uses it as a
*version vector of writes*: entry ``p`` is the revision of the latest write by
peer ``p`` that the version descends from. A peer that writes a record sets
its own entry to the revision it just allocated (so ``vc[last_updated_by] ==
last_updated_rev`` always holds) after joining the clocks of every version of
the record it holds. Nothing ticks on send or receive; a relayed version keeps
the exact clock its writer gave it (``protocol/database.md`` explains why the
draft's tick-on-send/receive rules are not used).

Comparison is the usual partial order: ``a <= b`` when every entry of ``a`` is
at most the matching entry of ``b`` (missing entries count as zero). Two
versions are then EQUAL, one is BEFORE/AFTER the other (it is an ancestor /
descendant), or they are CONCURRENT (a conflict).

A clock is immutable and hashable. Zero entries are dropped, so ``{}`` and
``{"p": 0}`` are the same clock. :meth:`VectorClock.from_json` checks a value
that came from a peer (object, 32-hex-digit lower-case keys, signed 64-bit
non-negative integers, bounded size) and raises
:class:`~csembed.database.errors.InvalidUpdate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum
from typing import Any, Final

from csembed.database.errors import InvalidUpdate
from csembed.hex_ids import PEER_ID_DIGITS, is_lower_hex
from csembed.protocol.jsonvalues import is_strict_int

__all__ = ["INT64_MAX", "Order", "VectorClock", "is_peer_id"]

INT64_MAX: Final = (1 << 63) - 1
DEFAULT_MAX_ENTRIES: Final = 1024


def is_peer_id(value: object) -> bool:
    """True for a 128-bit ID written as 32 lower-case hex digits."""
    return is_lower_hex(value, PEER_ID_DIGITS)


class Order(Enum):
    """How one clock relates to another (``a.compare(b)``)."""

    EQUAL = "equal"
    BEFORE = "before"  #: a happened before b: b descends from a
    AFTER = "after"  #: a descends from b
    CONCURRENT = "concurrent"  #: neither descends from the other: a conflict


class VectorClock:
    """An immutable version vector: peer ID -> counter, zero entries omitted."""

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        cleaned: dict[str, int] = {}
        for peer, count in items:
            if not is_peer_id(peer):
                raise ValueError(f"vector clock key {peer!r} is not a 32-hex-digit peer ID")
            if not is_strict_int(count):
                raise TypeError(f"vector clock entry for {peer} must be an int")
            if not 0 <= count <= INT64_MAX:
                raise ValueError(f"vector clock entry for {peer} = {count} is out of range")
            if count:
                cleaned[peer] = count
        self._entries: dict[str, int] = dict(sorted(cleaned.items()))
        self._hash: int | None = None

    @classmethod
    def from_json(
        cls, value: Any, *, max_entries: int = DEFAULT_MAX_ENTRIES, what: str = "vector_clock"
    ) -> VectorClock:
        """Check and convert a clock received from a peer; raises InvalidUpdate."""
        if not isinstance(value, dict):
            raise InvalidUpdate(f"must be a JSON object, got {type(value).__name__}", what)
        if len(value) > max_entries:
            raise InvalidUpdate(f"has {len(value)} entries, more than {max_entries}", what)
        for peer, count in value.items():
            if not is_peer_id(peer):
                shown = peer if len(peer) <= 40 else peer[:37] + "..."
                raise InvalidUpdate(f"key {shown!r} is not 32 lower-case hex digits", what)
            if not is_strict_int(count):
                raise InvalidUpdate(f"entry {peer} must be an integer", what)
            if not 0 <= count <= INT64_MAX:
                raise InvalidUpdate(f"entry {peer} = {count} is outside 0..2**63-1", what)
        return cls(value)

    @classmethod
    def from_text(cls, text: str) -> VectorClock:
        """Load the canonical JSON text written by :meth:`to_text` (trusted storage)."""
        return cls(json.loads(text))

    def to_json(self) -> dict[str, int]:
        """A fresh dict for a message body."""
        return dict(self._entries)

    def to_text(self) -> str:
        """Canonical compact JSON (sorted keys), as stored in SQLite."""
        return json.dumps(self._entries, separators=(",", ":"))

    def get(self, peer: str) -> int:
        """The entry for ``peer`` (0 when absent)."""
        return self._entries.get(peer, 0)

    def compare(self, other: VectorClock) -> Order:
        """Relation of this clock to ``other``."""
        mine, theirs = self._entries, other._entries
        less = greater = False
        for peer, count in mine.items():
            other_count = theirs.get(peer, 0)
            if count > other_count:
                greater = True
            elif count < other_count:
                less = True
        for peer, other_count in theirs.items():
            if peer not in mine and other_count > 0:
                less = True
        if less and greater:
            return Order.CONCURRENT
        if less:
            return Order.BEFORE
        if greater:
            return Order.AFTER
        return Order.EQUAL

    def __le__(self, other: VectorClock) -> bool:
        theirs = other._entries
        return all(count <= theirs.get(peer, 0) for peer, count in self._entries.items())

    def __lt__(self, other: VectorClock) -> bool:
        return self <= other and self._entries != other._entries

    def __ge__(self, other: VectorClock) -> bool:
        return other <= self

    def __gt__(self, other: VectorClock) -> bool:
        return other < self

    def merge(self, *others: VectorClock) -> VectorClock:
        """Entry-wise maximum with every clock in ``others``."""
        joined = dict(self._entries)
        for other in others:
            for peer, count in other._entries.items():
                if count > joined.get(peer, 0):
                    joined[peer] = count
        return VectorClock(joined)

    def with_entry(self, peer: str, count: int) -> VectorClock:
        """A copy with ``peer``'s entry set to ``count``."""
        changed = dict(self._entries)
        changed[peer] = count
        return VectorClock(changed)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._entries.items()))
        return self._hash

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self) -> Iterator[tuple[str, int]]:
        """(peer, counter) pairs in peer-ID order."""
        return iter(self._entries.items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{peer[:8]}:{count}" for peer, count in self._entries.items())
        return f"VectorClock({{{inner}}})"
