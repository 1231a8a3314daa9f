"""Benchmark the directory scanner against find and sha256sum, in one run.

Creates ``--files`` files of ``--size`` bytes (default 10,000 x 4 KiB, in
folders of 100) and times, on the same tree in the same run:

* **first scan** -- list, hash every file, build the events (the scan cache
  starts empty); anchor: ``find . -type f -print0 | xargs -0 sha256sum``,
  which also lists and hashes every file;
* **rescan** of the unchanged tree (cache warm: one ``lstat`` per entry, no
  hashing); target < 1 s; anchor: ``find . -type f | wc -l``, a bare walk.

The page cache is warm for every figure (the tree was just written), so the
numbers compare CPU cost, not disk speed. Peak RSS is the whole process's.

Usage: ``python tools/bench/scan.py [--files 10000] [--size 4096] [--board desktop]``
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from csembed.board_profile import load_board
from csembed.directory.localdb import open_local_db
from csembed.directory.paths import NameTable, PathMapper, ShareRoot
from csembed.directory.scan_cache import ScanCache
from csembed.directory.scanner import Scanner


def make_tree(root: Path, files: int, size: int) -> None:
    """``files`` files of ``size`` random-ish bytes, 100 per folder."""
    block = os.urandom(size)
    for i in range(files):
        folder = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            folder.mkdir()
        # Distinct content per file, so hashing cannot be skipped by anyone.
        (folder / f"f{i:06d}.bin").write_bytes(i.to_bytes(8, "big") + block[8:])


def timed_shell(command: str, cwd: Path) -> float:
    """Seconds a shell pipeline takes (output discarded)."""
    t0 = time.perf_counter()
    subprocess.run(command, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--board", default="desktop", help="profile giving memory.io_buffer")
    args = ap.parse_args()
    board = load_board(args.board)

    with tempfile.TemporaryDirectory(prefix="csembed-scan-") as tmp:
        root = Path(tmp) / "share"
        root.mkdir()
        t0 = time.perf_counter()
        make_tree(root, args.files, args.size)
        made = time.perf_counter() - t0
        conn = open_local_db(Path(tmp) / "state" / "local.sqlite",
                             board.storage.db_synchronous)
        mapper = PathMapper(ShareRoot.initialize(root, conn), NameTable(conn))
        cache = ScanCache(conn)
        scanner = Scanner(mapper, cache, io_buffer=board.memory.io_buffer)
        now = time.time() + 3600  # everything counts as settled

        t0 = time.perf_counter()
        first = scanner.scan(now)
        scanner.commit(first)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = scanner.scan(now)
        rescan_s = time.perf_counter() - t0
        assert first.hashed_files == args.files, first.hashed_files
        assert again.events == [] and again.hashed_files == 0

        hash_anchor = timed_shell("find . -type f -print0 | xargs -0 sha256sum", root)
        walk_anchor = timed_shell("find . -type f | wc -l", root)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    n = args.files
    mb = n * args.size / 1e6
    print(f"tree: {n} files x {args.size} B ({mb:.1f} MB) in {-(-n // 100)} folders, "
          f"written in {made:.2f} s; board {board.name}, io_buffer {board.memory.io_buffer} B")
    print(f"{'':24}{'ours':>12}{'anchor':>12}{'ratio':>8}   anchor")
    print(f"{'first scan (hash) s':24}{first_s:12.3f}{hash_anchor:12.3f}"
          f"{first_s / hash_anchor:8.2f}   find | xargs sha256sum")
    print(f"{'  files/s':24}{n / first_s:12.0f}{n / hash_anchor:12.0f}")
    print(f"{'rescan unchanged s':24}{rescan_s:12.3f}{walk_anchor:12.3f}"
          f"{rescan_s / walk_anchor:8.2f}   find -type f | wc -l")
    print(f"{'  files/s':24}{n / rescan_s:12.0f}{n / walk_anchor:12.0f}")
    print(f"rescan target < 1 s: {'met' if rescan_s < 1 else 'MISSED'}; "
          f"peak RSS {peak_kib / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
