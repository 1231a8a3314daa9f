"""Local changes a receive-only share keeps to itself, remembered across restarts.

Theory of operation
-------------------
On a receive-only share (:mod:`.share_policy`) a scan still commits what it
sees to the scan cache, but writes no record; the keys whose disk state then
differs from their record are kept here, each with the *version* of the
record it differed from (``peer:revision``, or ``""`` when there was no live
record). The planner leaves such a key alone -- it neither restores nor
deletes the user's file -- for as long as the record stays at that version.
When a peer changes the record, its version moves on, the key is dropped
from here and planned as usual: the peer's change comes in, and the local
file it replaces is archived (``csembed versions``). When the share becomes
a sending one again, the keys still here are written as ordinary local
changes (:meth:`LocalChanges.set_mode`).

Rows live in the share's local state database (table ``unsent``).
"""

from __future__ import annotations

import sqlite3

from csembed.database import Record


def record_version(record: Record | None) -> str:
    """The version a local change is measured against (``""``: no live record)."""
    return "" if record is None or record.deleted else \
        f"{record.last_updated_by}:{record.last_updated_rev}"


class UnsentChanges:
    """Key -> record version, in the local state database; the caller commits."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS unsent "
                     "(key TEXT PRIMARY KEY, version TEXT NOT NULL)")
        self._rows: dict[str, str] = dict(conn.execute("SELECT key, version FROM unsent"))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def note(self, key: str, version: str) -> None:
        """``key`` differs locally from the record at ``version``."""
        if self._rows.get(key) != version:
            self._rows[key] = version
            self._conn.execute("INSERT OR REPLACE INTO unsent VALUES (?, ?)", (key, version))

    def drop(self, key: str) -> None:
        """``key`` agrees with its record again (or the record moved on)."""
        if self._rows.pop(key, None) is not None:
            self._conn.execute("DELETE FROM unsent WHERE key = ?", (key,))

    def holds(self, key: str, record: Record | None) -> bool:
        """Whether ``key`` is a local change to keep; drops it once the record moved on."""
        version = self._rows.get(key)
        if version is None:
            return False
        if version == record_version(record):
            return True
        self.drop(key)
        self._conn.commit()
        return False

    def keys(self, limit: int | None = None) -> list[str]:
        """The keys, sorted (at most ``limit``)."""
        keys = sorted(self._rows)
        return keys if limit is None else keys[:limit]

    def clear(self) -> None:
        """Forget every key."""
        self._rows.clear()
        self._conn.execute("DELETE FROM unsent")

    def commit(self) -> None:
        """End the current transaction."""
        self._conn.commit()
