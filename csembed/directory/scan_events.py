"""What a scan reports: change events, notices, and the result of one pass.

A pass of :class:`csembed.directory.scanner.Scanner` ends in a
:class:`ScanResult`: its ``events`` go to the database first, then the
scanner's cache is committed from the private lists the result carries, so
a crash in between finds the same changes again. :func:`event_order` is the
order a batch is applied in: moves and additions parents first, content
changes, then deletions children first, so no event refers to a folder that
does not exist yet or is already gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from csembed.directory.records import FileValue
from csembed.directory.scan_cache import CachedEntry


@dataclass(frozen=True)
class Added:
    """A new file or directory at ``key``."""

    key: str
    value: FileValue


@dataclass(frozen=True)
class Modified:
    """The content, mode or kind of ``key`` changed."""

    key: str
    value: FileValue
    previous: FileValue


@dataclass(frozen=True)
class Deleted:
    """``key`` is gone."""

    key: str
    previous: FileValue


@dataclass(frozen=True)
class Moved:
    """``old_key`` is now ``new_key`` (its value may have changed too)."""

    old_key: str
    new_key: str
    value: FileValue
    previous: FileValue


ChangeEvent = Added | Modified | Deleted | Moved


@dataclass(frozen=True)
class Notice:
    """Something the scanner skipped, and why (for the log and ``status``)."""

    key: str
    reason: str


@dataclass
class ScanResult:
    """What one pass found. Hand ``events`` to the database, then :meth:`Scanner.commit`."""

    events: list[ChangeEvent]
    notices: list[Notice]
    pending: int  #: changes seen but not settled yet
    next_check: float | None  #: when a pending change may settle (rescan then)
    temp_files: list[str]  #: keys of the folders holding our ``.!clearsky`` files, with names
    listed: int  #: paths listed
    hashed_files: int
    hashed_bytes: int
    _puts: list[CachedEntry] = field(default_factory=list, repr=False)
    _deletes: list[str] = field(default_factory=list, repr=False)
    _reported: list[str] = field(default_factory=list, repr=False)


def key_depth(key: str) -> int:
    """How many folders deep ``key`` is (the root is 0)."""
    return 0 if key == "/" else key.count("/")


def event_order(event: ChangeEvent) -> tuple[int, int, str]:
    """Moves (parents first), additions (parents first), changes, deletions (children first)."""
    if isinstance(event, Moved):
        return (0, key_depth(event.new_key), event.new_key)
    if isinstance(event, Added):
        return (1, key_depth(event.key), event.key)
    if isinstance(event, Modified):
        return (2, 0, event.key)
    return (3, -key_depth(event.key), event.key)
