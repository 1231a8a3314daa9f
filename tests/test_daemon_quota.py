"""The board's storage quota covers every share of a daemon together.

B's board allows 300 kB in all; A shares two folders of 200 kB each. B
attaches both: the first file to arrive fits, the second would take the total
over the quota, so it is not downloaded and its share names the limit --
even though each share alone is well under the quota.
"""

from __future__ import annotations

import os

from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    board_with_quota,
    code_of,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

QUOTA = 300_000



def test_quota_counts_all_shares_together(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address, board=str(board_with_quota(procs.root, QUOTA)))
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
