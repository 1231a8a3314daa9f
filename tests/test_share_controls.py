"""The ignore file and the send-only / receive-only modes, on two engines joined in memory.

Real directories, real SQLite, the real wire codec (``tests/test_sync_support.py``);
the daemon-level commands (pause, resume, mode, persistence) are in
``tests/test_cli_share_controls.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from test_sync_support import Node, Wire, settle, small_board

from csembed.directory.errors import SelectionError
from csembed.directory.ignore_file import parse_ignore_text
from csembed.directory.share_policy import (
    PolicyError,
    SharePolicy,
    SyncMode,
    load_policy,
    save_policy,
)
from csembed.runtime.share_runtime import ShareRuntime


def _pair(tmp_path: Path) -> tuple[Node, Node, Wire]:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b", seed=2)
    return a, b, Wire(a, b)


def test_ignore_file_keeps_paths_local_both_ways_and_changes_take_effect(tmp_path: Path) -> None:
    a, b, wire = _pair(tmp_path)
    a.write(".csignore", b"# scratch files\n*.tmp\nbuild/\n/rootonly\n**/cache\n!keep.tmp\n")
    a.write("song.mid", b"notes")
    a.write("x.tmp", b"scratch")
    a.write("keep.tmp", b"kept")
    a.write("build/o.bin", b"object")
    a.write("rootonly", b"top")
    a.write("sub/rootonly", b"deep")
    a.write("sub/deeper/cache/c", b"cached")
    a.write("log.txt", b"shared log")
    settle([a, b], [wire])
    assert set(b.tree()) == {"song.mid", "keep.tmp", "sub", "sub/rootonly", "sub/deeper",
                             "log.txt"}

    # A peer's file on an ignored path is not fetched; A's own ignored file is untouched.
    b.write("y.tmp", b"from b")
    # A path ignored after it synced: a peer's deletion does not delete it here.
    a.write(".csignore", (a.root / ".csignore").read_bytes() + b"log.txt\n")
    settle([a, b], [wire])
    (b.root / "log.txt").unlink()
    settle([a, b], [wire])
    assert (a.root / "log.txt").read_bytes() == b"shared log"
    assert not (a.root / "y.tmp").exists()
    assert (a.root / "x.tmp").read_bytes() == b"scratch"
    assert not (b.root / ".csignore").exists()

    # Un-ignoring *.tmp: A's file is sent and the peer's is fetched, at the next scan.
    a.write(".csignore", b"build/\n")
    settle([a, b], [wire])
    assert (b.root / "x.tmp").read_bytes() == b"scratch"
    assert (a.root / "y.tmp").read_bytes() == b"from b"
    assert not (b.root / "build").exists()


@pytest.mark.parametrize("content, words", [
    (b"*.tmp\n" * 20_000, "this board reads at most 32768"),
    (b"\x00\x01binary\xff", "not a text file"),
    (b"\xff\xfe*.tmp\n", "not UTF-8"),
    (b"a\n" * 10_001, "more than 10000 patterns"),
])
def test_unusable_ignore_file_is_the_shares_error_and_nothing_is_sent(
        tmp_path: Path, content: bytes, words: str) -> None:
    a = Node(tmp_path, "a", board=small_board(io_buffer=32 * 1024))
    b = Node(tmp_path, "b", seed=2)
    wire = Wire(a, b)
    a.write("first.txt", b"one")
    settle([a, b], [wire])
    a.write(".csignore", content)
    a.write("second.txt", b"two")
    settle([a, b], [wire])
    status = a.engine.status()
    assert status["state"] == "error" and words in status["reason"], status["reason"]
    assert words in (status["ignore_error"] or "")
    assert not (b.root / "second.txt").exists()  # nothing sent on an unreadable rule set
    a.write(".csignore", b"*.log\n")
    settle([a, b], [wire])
    assert a.engine.status()["reason"] is None and a.engine.status()["ignore_error"] is None
    assert (b.root / "second.txt").read_bytes() == b"two"


def test_ignore_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    a, b, wire = _pair(tmp_path)
    (tmp_path / "elsewhere").write_bytes(b"*\n")
    (a.root / ".csignore").symlink_to(tmp_path / "elsewhere")
    a.write("f.txt", b"x")
    settle([a, b], [wire])
    assert "symbolic link" in a.engine.status()["reason"]


def test_ignore_text_checks_each_line() -> None:
    assert parse_ignore_text(b"\xef\xbb\xbf# c\r\n*.tmp\r\n\r\n!keep.tmp\n") == \
        ("*.tmp", "!keep.tmp")
    with pytest.raises(SelectionError, match="line 2"):
        parse_ignore_text(b"ok\n" + b"a" * 5000 + b"\n")


def test_send_only_sends_local_changes_and_holds_peers_changes(tmp_path: Path) -> None:
    a, b, wire = _pair(tmp_path)
    a.write("take1.mid", b"v1")
    a.write("take2.mid", b"keep me")
    settle([a, b], [wire])
    a.engine.set_mode(SyncMode.SEND_ONLY, time.time())
    assert a.engine.mode is SyncMode.SEND_ONLY

    b.write("take1.mid", b"edited on b")
    (b.root / "take2.mid").unlink()
    b.write("from-b.mid", b"new on b")
    settle([a, b], [wire])
    assert (a.root / "take1.mid").read_bytes() == b"v1"
    assert (a.root / "take2.mid").read_bytes() == b"keep me"
    assert not (a.root / "from-b.mid").exists()
    status = a.engine.status()
    assert status["sync_mode"] == "send_only"
    assert set(status["out_of_sync"]) == {"/take1.mid", "/take2.mid", "/from-b.mid"}
    assert status["complete"] and status["out_of_sync_count"] == 3

    # A local edit over the peer's newer version goes out at once (it is not deferred).
    a.write("take1.mid", b"v2 from a")
    settle([a, b], [wire])
    assert (b.root / "take1.mid").read_bytes() == b"v2 from a"
    assert "/take1.mid" not in a.engine.status()["out_of_sync"]

    # Back to send-receive: the peer's changes held back come in.
    a.engine.set_mode(SyncMode.SEND_RECEIVE, time.time())
    settle([a, b], [wire])
    assert not (a.root / "take2.mid").exists()
    assert (a.root / "from-b.mid").read_bytes() == b"new on b"
    assert a.engine.status()["out_of_sync"] == []
    assert a.tree() == b.tree()


def test_receive_only_keeps_local_changes_until_a_peer_changes_the_file(tmp_path: Path) -> None:
    a, b, wire = _pair(tmp_path)
    a.write("song.mid", b"v1")
    a.write("other.mid", b"o1")
    a.write("gone.mid", b"g1")
    settle([a, b], [wire])
    b.engine.set_mode(SyncMode.RECEIVE_ONLY, time.time())

    b.write("song.mid", b"local edit on b")
    b.write("b-only.mid", b"local add")
    (b.root / "gone.mid").unlink()
    a.write("other.mid", b"o2")
    settle([a, b], [wire])
    assert (b.root / "other.mid").read_bytes() == b"o2"  # remote changes come in
    assert (a.root / "song.mid").read_bytes() == b"v1"  # local ones are not sent
    assert not (a.root / "b-only.mid").exists()
    assert (a.root / "gone.mid").exists()
    assert not (b.root / "gone.mid").exists()  # and not undone either
    status = b.engine.status()
    assert status["not_sent"] == ["/b-only.mid", "/gone.mid", "/song.mid"]
    assert status["not_sent_count"] == 3

    # Kept across a restart (the full plan at start does not restore them).
    wire.disconnect()
    b.restart()
    b.engine.set_mode(SyncMode.RECEIVE_ONLY, time.time())
    wire = Wire(a, b)
    settle([a, b], [wire])
    assert not (b.root / "gone.mid").exists()
    assert (b.root / "song.mid").read_bytes() == b"local edit on b"

    # A peer changes a file edited here: its version comes in, ours is archived.
    a.write("song.mid", b"v2 from a")
    settle([a, b], [wire])
    assert (b.root / "song.mid").read_bytes() == b"v2 from a"
    assert b.local.archive.find_sha256(hashlib.sha256(b"local edit on b").hexdigest())
    assert b.engine.status()["not_sent"] == ["/b-only.mid", "/gone.mid"]

    # Sending again: what was kept back goes out as ordinary changes.
    b.engine.set_mode(SyncMode.SEND_RECEIVE, time.time())
    settle([a, b], [wire])
    assert (a.root / "b-only.mid").read_bytes() == b"local add"
    assert not (a.root / "gone.mid").exists()
    assert a.tree() == b.tree()
    assert b.engine.status()["not_sent"] == []


def test_policy_is_stored_and_checked(tmp_path: Path) -> None:
    assert load_policy(tmp_path) == SharePolicy()
    save_policy(tmp_path, SharePolicy(SyncMode.parse("receive-only"), paused=True))
    assert load_policy(tmp_path) == SharePolicy(SyncMode.RECEIVE_ONLY, True)
    with pytest.raises(PolicyError, match="unknown sync mode"):
        SyncMode.parse("sideways")
    (tmp_path / "policy.json").write_text('{"version": 1, "paused": "yes"}')
    with pytest.raises(PolicyError, match="paused"):
        load_policy(tmp_path)


def test_a_share_whose_root_is_missing_at_start_still_opens(tmp_path: Path) -> None:
    a, b, wire = _pair(tmp_path)
    a.write("one.txt", b"1")
    settle([a, b], [wire])
    wire.disconnect()
    away = tmp_path / "unmounted"
    b.root.rename(away)
    b.restart()  # reading the ignore file must not stop the engine from being built
    assert b.engine.status()["state"] == "error"
    away.rename(b.root)
    wire = Wire(a, b)
    a.write("two.txt", b"2")
    settle([a, b], [wire])
    assert b.engine.status()["state"] == "idle" and a.tree() == b.tree()


def test_send_only_override_makes_the_peers_match_this_device(tmp_path: Path) -> None:
    a, b, wire = _pair(tmp_path)
    a.write("take1.mid", b"v1")
    a.write("take2.mid", b"keep me")
    a.write("old name.mid", b"renamed on b")
    settle([a, b], [wire])
    a.engine.set_mode(SyncMode.SEND_ONLY, time.time())
    b.write("take1.mid", b"edited on b")
    (b.root / "take2.mid").unlink()
    b.write("from-b.mid", b"new on b")
    (b.root / "old name.mid").rename(b.root / "new name.mid")
    settle([a, b], [wire])
    assert a.engine.status()["out_of_sync_count"] == 5
    assert a.engine.override_changes(time.time()) == 5
    settle([a, b], [wire])
    assert b.tree() == a.tree()
    assert (b.root / "take1.mid").read_bytes() == b"v1"
    assert set(a.tree()) == {"take1.mid", "take2.mid", "old name.mid"}
    assert a.engine.status()["out_of_sync"] == []
    # and back to send-receive: nothing held back is left to apply
    a.engine.set_mode(SyncMode.SEND_RECEIVE, time.time())
    settle([a, b], [wire])
    assert set(a.tree()) == {"take1.mid", "take2.mid", "old name.mid"} and a.tree() == b.tree()


def test_receive_only_revert_brings_the_shares_versions_back(tmp_path: Path) -> None:
    a, b, wire = _pair(tmp_path)
    a.write("song.mid", b"v1")
    a.write("gone.mid", b"g1")
    settle([a, b], [wire])
    b.engine.set_mode(SyncMode.RECEIVE_ONLY, time.time())
    b.write("song.mid", b"local edit")
    b.write("b-only.mid", b"local add")
    (b.root / "gone.mid").unlink()
    settle([a, b], [wire])
    assert b.engine.status()["not_sent_count"] == 3
    assert b.engine.revert_changes(time.time()) == 3
    settle([a, b], [wire])
    assert b.tree() == a.tree() == {"song.mid": hashlib.sha256(b"v1").hexdigest(),
                                    "gone.mid": hashlib.sha256(b"g1").hexdigest()}
    for data in (b"local edit", b"local add"):  # nothing lost: archived
        assert b.local.archive.find_sha256(hashlib.sha256(data).hexdigest())
    assert b.engine.status()["not_sent"] == []


def test_a_paused_runtime_waits_without_scanning_or_ticking(tmp_path: Path) -> None:
    node = Node(tmp_path, "a")
    node.write("before.txt", b"1")

    async def run() -> None:
        runtime = ShareRuntime(node.engine, scan_budget=1.0, watch_changes=False)
        ticks = 0
        tick = node.engine.handle_timer

        def counting_tick(now: float) -> None:
            nonlocal ticks
            ticks += 1
            tick(now)

        node.engine.handle_timer = counting_tick  # type: ignore[method-assign]
        runtime.paused = True
        task = asyncio.get_running_loop().create_task(runtime.run())
        for _ in range(50):  # kicks (rescans, notifications) do not wake it into work
            runtime.request_scan()
            await asyncio.sleep(0)
        assert ticks == 0 and node.engine.stats()["scans"] == 0
        runtime.set_paused(False)
        await runtime.wait_until(lambda e: e.stats()["scans"] >= 1, timeout=30)
        assert ticks >= 1
        assert node.engine.replica.get("/before.txt") is not None
        runtime.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(run())


def test_without_an_ignore_file_no_pattern_is_added(tmp_path: Path) -> None:
    node = Node(tmp_path, "a")
    assert not node.local.selection.ignore  # no pattern: nothing is matched per path
    node.write(".csignore", b"")
    node.scan()
    assert node.local.selection.ignore.lines == ("/.csignore",)
    (node.root / ".csignore").unlink()
    node.scan()
    assert not node.local.selection.ignore
