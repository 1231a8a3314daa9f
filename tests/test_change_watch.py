"""Change notification: the sans-I/O inotify watch, the adapter on a real tree, and
two real daemons with the periodic scan out of the way."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
import sys
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)
from test_sync_support import Node, small_board

from csembed.directory import change_watch as cw
from csembed.directory.change_watch import ChangeWatch, parse_events
from csembed.directory.errors import PathError
from csembed.runtime.change_notify import already_known
from csembed.runtime.share_runtime import ShareRuntime

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


def raw(wd: int, mask: int, name: bytes = b"", cookie: int = 0) -> bytes:
    padded = name + b"\0" * (-len(name) % 16 or (16 if name else 0))
    return struct.pack("=iIII", wd, mask, cookie, len(padded)) + padded


def child_key(parent: str, name: str) -> str:
    if "\\" in name:
        raise PathError(name, "backslash")
    return (parent.rstrip("/") + "/" + name) if parent != "/" else "/" + name


def test_parse_events_and_truncation() -> None:
    data = raw(1, cw.IN_CLOSE_WRITE, b"a.txt") + raw(2, cw.IN_Q_OVERFLOW)
    events = parse_events(data)
    assert [(e.wd, e.mask, e.name) for e in events] == [
        (1, cw.IN_CLOSE_WRITE, b"a.txt"), (2, cw.IN_Q_OVERFLOW, b"")]
    with pytest.raises(ValueError):
        parse_events(data[:-3])


def test_sorts_settled_and_touched_and_debounces() -> None:
    watch = ChangeWatch(child_key, quiet=0.2, longest=0.5)
    watch.watching(1, "/", "/disk", root=True)
    watch.watching(2, "/d", "/disk/d")
    watch.receive(raw(1, cw.IN_CREATE, b"new") + raw(1, cw.IN_MODIFY, b"new"), 10.0)
    assert watch.due() == pytest.approx(10.2)
    assert watch.take(10.1) is None
    watch.receive(raw(2, cw.IN_CLOSE_WRITE, b"saved") + raw(1, cw.IN_MOVED_TO, b"moved")
                  + raw(1, cw.IN_DELETE, b"gone") + raw(1, cw.IN_CREATE, b"x.part.!clearsky")
                  + raw(1, cw.IN_CLOSE_WRITE, b"bad\\name") + raw(9, cw.IN_DELETE, b"who"),
                  10.15)
    assert watch.due() == pytest.approx(10.35)
    watch.receive(raw(1, cw.IN_MODIFY, b"new"), 10.4)
    assert watch.due() == pytest.approx(10.5)  # never more than `longest` after the first
    request = watch.take(10.5)
    assert request is not None and not request.full
    assert {k for k, _ in request.settled} == {"/d/saved", "/moved", "/gone"}
    assert request.touched == {("/new", "/disk/new")}
    assert watch.due() is None and watch.take(99.0) is None


def test_new_folders_are_queued_and_overflow_means_full() -> None:
    watch = ChangeWatch(child_key)
    watch.watching(1, "/", "/disk", root=True)
    watch.receive(raw(1, cw.IN_CREATE | cw.IN_ISDIR, b"sub"), 1.0)
    assert [(f.key, f.path) for f in watch.new_folders] == [("/sub", "/disk/sub")]
    watch.watching(2, "/sub", "/disk/sub")
    watch.receive(raw(2, cw.IN_MOVE_SELF), 1.05)  # moved away: its old name is void
    watch.receive(raw(2, cw.IN_CLOSE_WRITE, b"x"), 1.06)
    assert watch.folders == 1
    watch.receive(raw(-1, cw.IN_Q_OVERFLOW), 1.1)
    request = watch.take(5.0)
    assert request is not None and request.full and ("/sub", "/disk/sub") in request.settled
    assert ("/sub/x", "/disk/sub/x") not in request.settled
    watch.receive(raw(1, cw.IN_IGNORED), 6.0)  # the root's watch is gone
    request = watch.take(10.0)
    assert request is not None and request.full


@linux_only
def test_saved_file_is_recorded_without_a_periodic_scan(tmp_path: Path) -> None:
    """The adapter on a real tree: a long scan interval, no rescan request."""

    async def main() -> None:
        board = small_board()
        node = Node(tmp_path, "a", board=dataclasses.replace(
            board, cpu=dataclasses.replace(board.cpu, scan_interval=86400)))
        runtime = ShareRuntime(node.engine, scan_budget=1.0)
        task = asyncio.create_task(runtime.run())
        try:
            await runtime.wait_until(lambda e: e.stats()["scans"] >= 1, timeout=60)
            assert runtime.notifier is not None
            node.write("later/inside/deep.txt", b"made after the watch started")
            await runtime.wait_until(lambda e: e.replica.get("/later/inside/deep.txt")
                                     is not None, timeout=60)
            node.write("later/inside/deep.txt", b"saved again")
            await runtime.wait_until(
                lambda e: (r := e.replica.get("/later/inside/deep.txt")) is not None
                and r.value.get("size") == len(b"saved again"), timeout=60)
            # What the scan cache already holds (our own writes, a download renamed
            # into place) asks for no scan; a real change does.
            path = str(node.root / "later" / "inside" / "deep.txt")
            cache = node.engine.local.scanner.cache
            await runtime.wait_until(lambda e: already_known(cache, "/later/inside/deep.txt",
                                                             path), timeout=60)
            node.write("later/inside/deep.txt", b"third")
            assert not already_known(cache, "/later/inside/deep.txt", path)
            assert not already_known(cache, "/nowhere", path)
            assert already_known(cache, "/nowhere", path + ".missing")
        finally:
            runtime.stop()
            await task

    asyncio.run(main())


def _share(daemon, path: Path) -> str:
    return json.loads(daemon.cli("share", path, "--json").stdout)["access_code"]


@linux_only
@pytest.mark.once
def test_two_daemons_sync_a_saved_file_without_rescan(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address)
    for daemon in (a, b):  # the periodic scan out of the way: one a day
        daemon.cli("config", "scan_interval", "86400")
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "first.txt").write_text("before sharing\n")
    code = _share(a, pa)
    json.loads(b.cli("attach", code, pb, "--json", "--timeout", "60").stdout)
    wait_for(lambda: tree(pa) == tree(pb), "B to receive A's first file")
    (pa / "saved.txt").write_text("saved on A, no rescan asked\n")
    wait_for(lambda: (pb / "saved.txt").exists(), "the saved file to reach B")
    assert (pb / "saved.txt").read_text() == "saved on A, no rescan asked\n"
    (pb / "back.txt").write_text("and back\n")
    wait_for(lambda: (pa / "back.txt").exists(), "B's saved file to reach A")
