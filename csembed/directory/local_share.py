"""One share's local side, assembled: the object the sync engine holds.

:func:`open_local_share` wires the pieces of this package together for a
share root and its state directory (``<data>/shares/<share>/``), with limits
from the board profile:

=================  =================================================  ==========================
piece              what it does                                       board setting
=================  =================================================  ==========================
``root``           share root identity, name rules                    --
``mapper``         key <-> disk, safely                               --
``cache``          what the scanner last saw (by key and by hash)     --
``scanner``        local changes as events                            ``memory.io_buffer``
``store``          downloads, copies, deletions, conflicts            ``storage.*``
``reader``         content by hash for ``directory.get``              --
``archive``        replaced / deleted versions                        ``storage.archive_size``
``selection``      ignore / partial / subtree                         --
=================  =================================================  ==========================

``create=True`` records the root's identity (do it once, when the user adds
the share); afterwards a root that is missing or replaced makes every scan
raise :class:`ShareUnavailable`.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csembed.board_profile import BoardProfile
from csembed.directory.archive import Archive
from csembed.directory.disk_names import NameRules
from csembed.directory.filestore import FileStore, StoreLimits
from csembed.directory.localdb import LOCAL_DB_NAME, open_local_db
from csembed.directory.paths import NameTable, PathMapper, ShareRoot
from csembed.directory.reader import ContentReader
from csembed.directory.scan_cache import ScanCache
from csembed.directory.scanner import Scanner
from csembed.directory.selection import Selection, load_selection

ARCHIVE_DIR = "archive"


@dataclass
class LocalShare:
    """Every local piece of one share."""

    conn: sqlite3.Connection
    root: ShareRoot
    selection: Selection
    mapper: PathMapper
    cache: ScanCache
    archive: Archive
    scanner: Scanner
    store: FileStore
    reader: ContentReader

    def close(self) -> None:
        """Flush deferred folder syncs and close the state database."""
        self.store.flush()
        self.conn.close()


def open_local_share(root: Path | str, state_dir: Path | str, board: BoardProfile, *,
                     create: bool = False, rng: random.Random | None = None,
                     settle: float = 2.0, rules: NameRules | None = None,
                     usage: Callable[[], int] | None = None) -> LocalShare:
    """Open (or with ``create``, set up) the local side of a share.

    ``usage`` returns the bytes that count against the board's quota; a
    daemon running several shares passes the total of all of them. By
    default only this share counts.
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = open_local_db(state / LOCAL_DB_NAME, board.storage.db_synchronous,
                         board.storage.db_cache)
    share_root = (ShareRoot.initialize(root, conn, rules) if create
                  else ShareRoot.load(root, conn))
    selection = load_selection(state)
    mapper = PathMapper(share_root, NameTable(conn), subtree=selection.subtree)
    cache = ScanCache(conn)
    io_buffer = board.memory.io_buffer
    archive = Archive(state / ARCHIVE_DIR, conn, board.storage.archive_size, io_buffer=io_buffer)
    scanner = Scanner(mapper, cache, selection=selection, io_buffer=io_buffer, settle=settle)
    store = FileStore(mapper, cache, archive=archive,
                      limits=StoreLimits.from_board(board.storage), io_buffer=io_buffer,
                      write_policy=board.storage.write_policy, rng=rng, usage=usage)
    reader = ContentReader(mapper, cache, archive)
    return LocalShare(conn, share_root, selection, mapper, cache, archive, scanner, store,
                      reader)
