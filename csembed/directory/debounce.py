"""Debouncing file changes (directory.md "File Change Notification").

Theory of operation
-------------------
A change is reported only once the file has stopped changing: the
:class:`Debouncer` remembers, per key, the last *signature* it saw (size,
mtime, inode, ctime, mode -- or "missing") and when that signature was first
seen. The change becomes *settled* when the same signature has been seen
for ``settle`` seconds; any new signature restarts the wait, so a file that
keeps changing is held back until it stops (the draft: "if it is changed
during the interval, the software should wait still longer").

A path seen changing for the first time may already be old: if its own
change time (the later of mtime and ctime; ctime cannot be set by programs)
lies ``settle`` seconds or more in the past, it is settled at once. That
lets the first scan of an existing tree report everything in one pass.
Because of that comparison ``now`` must be on the same clock as file
timestamps (``time.time()``); tests pass a fake one.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass
class _Watch:
    signature: Hashable
    since: float


class Debouncer:
    """Per-key settle timers for changes seen by successive scans."""

    def __init__(self, settle: float = 2.0) -> None:
        if settle < 0:
            raise ValueError(f"settle time cannot be negative: {settle}")
        self.settle = settle
        self._watch: dict[str, _Watch] = {}

    def __len__(self) -> int:
        return len(self._watch)

    def __contains__(self, key: object) -> bool:
        return key in self._watch

    def observe(self, key: str, signature: Hashable, now: float,
                changed_at: float | None = None) -> bool:
        """Record ``signature`` for ``key`` at ``now``; True when the change has settled.

        ``changed_at`` is the path's own change time in seconds (``None`` for
        a missing path); it allows settling at first sight for old changes.
        """
        watch = self._watch.get(key)
        if watch is None:
            if changed_at is not None and now - changed_at >= self.settle:
                return True
            self._watch[key] = _Watch(signature, now)
            return self.settle == 0
        if watch.signature != signature:
            watch.signature, watch.since = signature, now
            return self.settle == 0
        return now - watch.since >= self.settle

    def due(self, key: str) -> float | None:
        """When ``key`` will have settled if unchanged, or ``None`` if not watched."""
        watch = self._watch.get(key)
        return None if watch is None else watch.since + self.settle

    def next_due(self) -> float | None:
        """The earliest time any watched change can settle (schedule a rescan then)."""
        return min((w.since + self.settle for w in self._watch.values()), default=None)

    def forget(self, key: str) -> None:
        """Stop watching ``key`` (reported, or back to its recorded state)."""
        self._watch.pop(key, None)

    def keys(self) -> list[str]:
        """Keys currently being watched."""
        return list(self._watch)
