"""The board's storage quota covers every share of a daemon together.

B's board allows 300 kB in all; A shares two folders of 200 kB each. B
attaches both: the first file to arrive fits, the second would take the total
over the quota, so it is not downloaded and its share names the limit --
even though each share alone is well under the quota.
"""

from __future__ import annotations

import os
from pathlib import Path

from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    code_of,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

from csembed.board_profile import boards_dir

QUOTA = 300_000


def _board_with_quota(root: Path) -> Path:
    text = (boards_dir() / "desktop.toml").read_text()
    lines = [(f'quota = "{QUOTA}"' if line.startswith("quota") else line)
             for line in text.splitlines()]
    path = root / "small-disk.toml"
    path.write_text("\n".join(lines).replace('name = "desktop"', 'name = "small-disk"') + "\n")
    return path


def test_quota_counts_all_shares_together(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address, board=str(_board_with_quota(procs.root)))
    sources = [procs.root / "A1", procs.root / "A2"]
    targets = [procs.root / "B1", procs.root / "B2"]
    for source in sources:
        source.mkdir()
        (source / "take.wav").write_bytes(os.urandom(200_000))
    for source, target in zip(sources, targets, strict=True):
        code = code_of(a.cli("share", source, "--json").stdout)
        b.cli("attach", code, target)

    def settled() -> list[dict] | None:
        held = [t for t in targets if (t / "take.wav").exists()]
        refused = [share for t in targets if (share := b.share(t)) and share.get("limits")]
        return refused if len(held) == 1 and len(refused) == 1 else None

    refused = wait_for(settled, "one share to fill the quota and the other to be refused")
    assert refused[0]["limits"][0]["limit"] == "quota"
    assert refused[0]["limits"][0]["key"] == "/take.wav"
    held = sum((t / "take.wav").stat().st_size for t in targets if (t / "take.wav").exists())
    assert held <= QUOTA
