"""The directory engine's local state file: one SQLite database per share.

The replicated records live in the database engine's own store; this file
holds only what describes *this* device's copy of the share and never leaves
it:

* ``meta`` -- the share root's identity (``st_dev``/``st_ino`` recorded when
  the share was created) and the probed file-name rules (:mod:`.paths`);
* ``names`` -- on-disk names that differ from the record's name (encoded or
  ``_``-prefixed), :class:`csembed.directory.paths.NameTable`;
* ``files`` -- the scanner's cache of what it last saw and hashed,
  :class:`csembed.directory.scanner.ScanCache`;
* ``archive`` -- the index of archived old versions,
  :class:`csembed.directory.archive.Archive`.

It lives in the share's state directory inside the daemon's data directory
(``<data>/shares/<share>/local.sqlite``), never inside the share. WAL mode,
so readers (serving a file) do not wait for the scanner's commit; the
``synchronous`` level comes from the board profile (``storage.db_synchronous``).
Each module creates its own tables with ``CREATE TABLE IF NOT EXISTS``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from csembed.directory.errors import DirectoryError

LOCAL_DB_NAME = "local.sqlite"
_SYNCHRONOUS = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}


def open_local_db(path: Path | str, synchronous: str = "normal",
                  cache_size: int | None = None) -> sqlite3.Connection:
    """Open (creating if needed) a share's local state database at ``path``.

    ``path`` may be ``":memory:"`` for tests. Autocommit is off; callers
    commit at the end of each logical change. ``cache_size`` is the SQLite
    page cache in bytes (the board's ``storage.db_cache``; SQLite's default
    when ``None``).
    """
    if synchronous not in _SYNCHRONOUS:
        raise DirectoryError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
                             f"got {synchronous!r}")
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level="DEFERRED")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[synchronous]}")
    if cache_size is not None:  # bytes (the board's storage.db_cache)
        conn.execute(f"PRAGMA cache_size=-{max(1, int(cache_size) // 1024)}")
    conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.commit()
    return conn


def get_meta(conn: sqlite3.Connection, name: str) -> str | None:
    """Read one ``meta`` value, or ``None``."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, name: str, value: str) -> None:
    """Write one ``meta`` value (the caller commits)."""
    conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) "
                 "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))
