"""Shared set-up for the directory engine tests (no tests of its own).

``make_share`` builds one share's local side on real directories under a
pytest ``tmp_path``; ``tmpfs`` mounts a small tmpfs when running as root
(for real ENOSPC and cross-filesystem cases) and skips otherwise.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csembed.directory.archive import Archive
from csembed.directory.disk_names import NameRules
from csembed.directory.filestore import FileStore, StoreLimits
from csembed.directory.localdb import open_local_db
from csembed.directory.paths import NameTable, PathMapper, ShareRoot
from csembed.directory.reader import ContentReader
from csembed.directory.scan_cache import ScanCache
from csembed.directory.scanner import Scanner
from csembed.directory.selection import Selection

SETTLE = 2.0


@dataclass
class Share:
    """A share's local pieces over real directories."""

    root: Path
    state: Path
    share_root: ShareRoot
    mapper: PathMapper
    cache: ScanCache
    scanner: Scanner
    archive: Archive
    store: FileStore
    reader: ContentReader

    def settled_now(self) -> float:
        """A clock value at which every file made so far counts as settled."""
        return time.time() + 10 * SETTLE

    def scan_commit(self, now: float | None = None):
        """Scan, commit, and return the result."""
        result = self.scanner.scan(self.settled_now() if now is None else now)
        self.scanner.commit(result)
        return result


def make_share(tmp_path: Path, *, rules: NameRules | None = None, subtree: str = "/",
               selection: Selection | None = None, archive_cap: int = 1 << 20,
               limits: StoreLimits | None = None, io_buffer: int = 4096,
               write_policy: str = "normal", seed: int = 7, name: str = "share") -> Share:
    """A fresh share rooted at ``tmp_path / name``, state in ``tmp_path / (name + '-state')``."""
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    state = tmp_path / f"{name}-state"
    conn = open_local_db(state / "local.sqlite")
    share_root = ShareRoot.initialize(root, conn, rules)
    return assemble(root, state, conn, share_root, subtree=subtree, selection=selection,
                    archive_cap=archive_cap, limits=limits, io_buffer=io_buffer,
                    write_policy=write_policy, seed=seed)


def reopen(share: Share, **kwargs) -> Share:
    """The same share opened again from its state (as after a restart)."""
    conn = open_local_db(share.state / "local.sqlite")
    return assemble(share.root, share.state, conn, ShareRoot.load(share.root, conn), **kwargs)


def reopen_at(root: Path, state: Path, **kwargs) -> Share:
    """A share opened from its root and state folders (e.g. in another process)."""
    conn = open_local_db(state / "local.sqlite")
    return assemble(root, state, conn, ShareRoot.load(root, conn), **kwargs)


def assemble(root, state, conn, share_root, *, subtree="/", selection=None,
             archive_cap=1 << 20, limits=None, io_buffer=4096, write_policy="normal",
             seed=7) -> Share:
    mapper = PathMapper(share_root, NameTable(conn), subtree=subtree)
    cache = ScanCache(conn)
    archive = Archive(state / "archive", conn, archive_cap, io_buffer=io_buffer)
    scanner = Scanner(mapper, cache, selection=selection, io_buffer=io_buffer, settle=SETTLE)
    store = FileStore(mapper, cache, archive=archive, limits=limits, io_buffer=io_buffer,
                      write_policy=write_policy, rng=random.Random(seed))
    return Share(root, state, share_root, mapper, cache, scanner, archive, store,
                 ContentReader(mapper, cache, archive))


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (root only; otherwise the test is skipped)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def kinds(result) -> list[tuple[str, ...]]:
    """Events as comparable tuples: (kind, key) or ('Moved', old, new)."""
    out: list[tuple[str, ...]] = []
    for event in result.events:
        name = type(event).__name__
        if name == "Moved":
            out.append((name, event.old_key, event.new_key))
        else:
            out.append((name, event.key))
    return out
