"""End to end: two daemons on loopback driven through the CLI only.

Each test starts real ``csembed daemon`` processes (and a ``csembed tracker``
where discovery goes through one), shares a folder on A with ``csembed
share``, joins it on B with ``csembed attach`` and the printed code, then
edits, deletes and renames on both sides and waits -- by polling files and
the control socket -- until the trees agree. Local changes are picked up by
``csembed rescan`` rather than by waiting for the board's scan interval.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from test_daemon_support import (  # noqa: F401  (fixtures)
    Daemon,
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)


def _populate(root: Path) -> None:
    (root / "takes" / "2026").mkdir(parents=True)
    for i in range(12):
        (root / "takes" / "2026" / f"take{i:02d}.mid").write_bytes(
            hashlib.sha256(str(i).encode()).digest() * (40 + 30 * i))
    (root / "notes.txt").write_text("practice the left hand\n")
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "empty folder").mkdir()


def _share(daemon: Daemon, path: Path, *options: str) -> str:
    return json.loads(daemon.cli("share", path, "--json", *options).stdout)["access_code"]


def _attach(daemon: Daemon, code: str, path: Path) -> dict:
    return json.loads(daemon.cli("attach", code, path, "--json", "--timeout", "60").stdout)


def _same_tree(a: Path, b: Path) -> bool:
    return tree(a) == tree(b)


def _both_rescan(a: Daemon, pa: Path, b: Daemon, pb: Path) -> None:
    a.rescan_until_scanned(pa)
    b.rescan_until_scanned(pb)


def test_share_attach_edit_delete_rename_both_ways_through_a_tracker(procs: Procs) -> None:
    tracker = procs.tracker()
    a = procs.daemon("a", "--tracker", tracker.address)
    b = procs.daemon("b", "--tracker", tracker.address)
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    _populate(pa)

    code = _share(a, pa)
    joined = _attach(b, code, pb)
    assert joined["status"] != "attaching" and joined["access_level"] == "read_write"
    wait_for(lambda: _same_tree(pa, pb), "B to receive A's files")
    assert b.share(pb)["peers"] == 1

    # edits on both sides, a deletion on A, a rename on B
    (pa / "notes.txt").write_text("practice the left hand\nand the pedal\n")
    (pb / "takes" / "2026" / "new from laptop.mid").write_bytes(b"MThd" + b"\x90" * 500)
    (pa / "takes" / "2026" / "take03.mid").unlink()
    (pb / "takes" / "2026" / "take05.mid").rename(pb / "takes" / "2026" / "take05 best.mid")
    _both_rescan(a, pa, b, pb)
    wait_for(lambda: _same_tree(pa, pb) or _both_rescan(a, pa, b, pb),
             "the edits to meet in the middle")
    final = tree(pa)
    assert "takes/2026/take03.mid" not in final
    assert "takes/2026/take05.mid" not in final and "takes/2026/take05 best.mid" in final
    assert "takes/2026/new from laptop.mid" in final
    assert (pb / "notes.txt").read_text().endswith("and the pedal\n")

    # the one-time code is spent: a second attach with it never gets keys
    again = b.cli("attach", code, procs.root / "B2", "--timeout", "3", check=False)
    assert again.returncode == 1, again.stdout + again.stderr
    assert b.share(procs.root / "B2")["status"] == "attaching"
    b.cli("detach", procs.root / "B2")
    assert b.share(procs.root / "B2") is None
    assert not a.call("list_shares")["shares"][0].get("reason")


def test_read_only_code_over_manual_peers(procs: Procs) -> None:
    a = procs.daemon("a")
    # B is told where A is on its command line (a dead address beside it does no harm);
    # A learns B's address through its persisted 'peers' setting
    b = procs.daemon("b", "--peer", a.address, "--peer", "127.0.0.1:1")
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    _populate(pa)
    a.cli("config", "peers", json.dumps([b.address]))

    code = _share(a, pa, "--mode", "read-only")
    joined = _attach(b, code, pb)
    assert joined["access_level"] == "read_only"
    wait_for(lambda: _same_tree(pa, pb), "B to receive A's files")

    # both dial each other (twice: the code, then the share key): one link survives,
    # the same one on both sides (test_daemon_links.py checks the tie-break rule itself)
    def links(daemon: Daemon) -> list[dict]:
        return [p for p in daemon.call("list_peers")["peers"] if p.get("state") == "connected"]

    wait_for(lambda: len(links(a)) == 1 and len(links(b)) == 1, "one link per peer")
    (la,), (lb,) = links(a), links(b)
    assert la["direction"] != lb["direction"]

    # B's edit stays on B (moved aside as a conflict copy); A's edits still arrive
    original = (pa / "notes.txt").read_bytes()
    (pb / "notes.txt").write_text("scribbled on the read-only copy\n")
    (pb / "mine.txt").write_text("only on B\n")
    b.rescan_until_scanned(pb)
    (pa / "from A.txt").write_text("A is the writer\n")
    a.rescan_until_scanned(pa)
    wait_for(lambda: (pb / "from A.txt").exists(), "A's new file to reach B")
    wait_for(lambda: (pb / "notes.txt").read_bytes() == original,
             "B's copy of notes.txt to be restored")
    assert (pa / "notes.txt").read_bytes() == original
    assert not (pa / "mine.txt").exists()
    assert not any("CONFLICT" in name for name in tree(pa))
    assert any("CONFLICT" in name for name in tree(pb))
    # a read-only member cannot hand out read-write access
    refused = b.cli("share", pb, "--mode", "read-write", check=False)
    assert refused.returncode == 2 and "not_permitted" in refused.stderr


def test_both_daemons_restart_mid_transfer_and_finish(procs: Procs) -> None:
    tracker = procs.tracker()
    # the piano board limits both directions to 1 MB/s: 6 MB take several seconds
    a = procs.daemon("a", "--tracker", tracker.address, board="wifi-piano")
    b = procs.daemon("b", "--tracker", tracker.address)
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    payload = os.urandom(6 << 20)
    (pa / "recital.wav").write_bytes(payload)
    (pa / "small.txt").write_text("small\n")
    code = _share(a, pa)
    _attach(b, code, pb)

    def moving() -> bool:
        transfers = b.call("list_transfers")["transfers"]
        return any(t["done"] > 0 for t in transfers)

    wait_for(moving, "the big file to start arriving", interval=0.05)
    assert not (pb / "recital.wav").exists()
    a.restart()
    b.restart()
    wait_for(lambda: (pb / "recital.wav").exists(), "the transfer to finish after restarts")
    assert (pb / "recital.wav").read_bytes() == payload
    wait_for(lambda: _same_tree(pa, pb), "the trees to agree")
    assert b.share(pb)["status"] in ("synced", "syncing")
