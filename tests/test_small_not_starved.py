"""A small file saved while a big one is on its way is not held behind it (issue 13.4).

A sends B one 4 MB take through its 300 kB/s upload limit (about 13 s); once
B has some of it, A saves a short take. B must hold the short take while the
big one is still incomplete: neither the short take's record, nor its data,
nor its landing waits for the whole big file. Both daemons use a desktop
board with 64 KiB chunks (before the fix the fetcher asked for 4 MiB pieces,
so the big take went as one payload, and a finished short take then waited
in the landing batch until the big one ended)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    code_of,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

from csembed.board_profile import boards_dir

BIG = 4_000_000
SMALL = 30_000


def small_chunk_board(root: Path) -> Path:
    """The desktop board with 64 KiB chunks and 16 MiB in flight."""
    text = (boards_dir() / "desktop.toml").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("chunk_size"):
            line = 'chunk_size = "64 KiB"'
        elif line.startswith("max_bytes_in_flight"):
            line = 'max_bytes_in_flight = "16 MiB"'
        lines.append(line)
    path = root / "small-chunks.toml"
    path.write_text("\n".join(lines).replace('name = "desktop"', 'name = "small-chunks"')
                    + "\n")
    return path


def partial_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.!clearsky*"))


@pytest.mark.once
def test_small_file_lands_while_a_big_one_is_still_coming(procs: Procs) -> None:
    board = str(small_chunk_board(procs.root))
    a = procs.daemon("a", board=board)
    b = procs.daemon("b", "--peer", a.address, board=board)
    a.cli("config", "upload_limit", "300 kB/s")
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "concert.wav").write_bytes(os.urandom(BIG))
    code = code_of(a.cli("share", pa, "--json").stdout)
    b.cli("attach", code, pb)

    def big_under_way() -> bool:
        share = b.share(pb) or {}
        return any(t.get("key") == "/concert.wav" and 0 < int(t.get("done", 0)) < BIG // 4
                   for t in share.get("transfers") or [])
    wait_for(big_under_way, "B to start receiving the big take")
    (pa / "scale.wav").write_bytes(os.urandom(SMALL))

    def small_landed() -> int | None:
        if (pb / "scale.wav").is_file() and (pb / "scale.wav").stat().st_size == SMALL:
            big = pb / "concert.wav"
            return 1 + (big.is_file() and big.stat().st_size == BIG)
        return None
    state = wait_for(small_landed, "the short take on B", timeout=120)
    assert state == 1, "the short take arrived only after the big one was complete"
    wait_for(lambda: (pb / "concert.wav").is_file(), "the big take on B", timeout=120)
    assert (pb / "concert.wav").read_bytes() == (pa / "concert.wav").read_bytes()
