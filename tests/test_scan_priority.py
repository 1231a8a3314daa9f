"""Scanning that does not delay sync: new content hashed at full speed, a requested
scan settles at once, and files are announced while the scan goes on."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest
from test_directory_support import make_share
from test_sync_support import Node, small_board

from csembed.directory.pacing import ScanBudget, slice_is_urgent
from csembed.directory.scan_events import Added
from csembed.runtime.share_runtime import ShareRuntime


class StepClock:
    """Advances one tick per reading: ``step`` stops after every read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_urgent_slices_owe_no_rest() -> None:
    clock = StepClock()
    budget = ScanBudget(0.001, clock)
    budget.start_slice()
    assert budget.end_slice(full_speed=True) == 0.0
    assert budget.full_speed_seconds == budget.work_seconds == 1.0
    budget.start_slice()
    assert budget.end_slice() == pytest.approx(999.0)  # a background walk is paced
    assert budget.rest_seconds == pytest.approx(999.0)


def test_urgency_rule() -> None:
    assert slice_is_urgent(requested=True, hashed_bytes=0)
    assert slice_is_urgent(requested=False, hashed_bytes=1)
    assert not slice_is_urgent(requested=False, hashed_bytes=0)


def test_requested_pass_settles_fresh_changes(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a").write_bytes(b"fresh")
    (share.root / "b").write_bytes(b"fresh too")
    share.scan_commit()
    (share.root / "a").write_bytes(b"changed")
    (share.root / "c").write_bytes(b"new")
    now = time.time()
    waiting = share.scanner.scan(now)  # just written: still settling
    assert waiting.events == [] and waiting.pending == 2
    share.scanner.settle_next_pass(["/c"])  # a notification saw /c closed
    only_c = share.scanner.scan(now)
    share.scanner.commit(only_c)
    assert [(type(e), e.key) for e in only_c.events] == [(Added, "/c")]
    assert only_c.pending == 1
    share.scanner.settle_next_pass()  # an explicit rescan
    everything = share.scanner.scan(now)
    assert [e.key for e in everything.events] == ["/a"] and everything.pending == 0


def test_early_reports_are_final_and_not_repeated(tmp_path: Path) -> None:
    share = make_share(tmp_path, io_buffer=4096)
    for i in range(6):
        (share.root / "d").mkdir(exist_ok=True)
        (share.root / "d" / f"f{i}").write_bytes(os.urandom(10_000))
    clock = StepClock()
    scan = share.scanner.start(share.settled_now())
    taken: list[str] = []
    try:
        while not scan.step(until=clock.now + 1, clock=clock):
            early = scan.take_early()
            if early is not None:
                assert all(isinstance(e, Added) for e in early.events)
                share.scanner.commit(early)
                taken += [e.key for e in early.events]
        result = scan.finish()
    finally:
        scan.close()
    share.scanner.commit(result)
    assert taken[:2] == ["/", "/d"]  # folders first, then files as they are hashed
    assert len([k for k in taken if k.startswith("/d/")]) >= 4
    final = [e.key for e in result.events]
    assert not set(final) & set(taken)
    assert sorted(taken + final) == sorted(["/", "/d"] + [f"/d/f{i}" for i in range(6)])
    assert share.scan_commit().events == []


def test_no_early_reports_while_something_vanished(tmp_path: Path) -> None:
    share = make_share(tmp_path, io_buffer=4096)
    (share.root / "old").write_bytes(os.urandom(9000))
    share.scan_commit()
    os.rename(share.root / "old", share.root / "new")  # a move: must pair in finish()
    (share.root / "other").write_bytes(os.urandom(9000))
    clock = StepClock()
    share.scanner.settle_next_pass()  # the vanished side too, so the move pairs in this pass
    scan = share.scanner.start(share.settled_now())
    try:
        while not scan.step(until=clock.now + 1, clock=clock):
            assert scan.take_early() is None
        result = scan.finish()
    finally:
        scan.close()
    assert {type(e).__name__ for e in result.events} == {"Moved", "Added"}


def test_new_content_is_hashed_at_full_speed_under_a_tiny_budget(tmp_path: Path) -> None:
    """With scan_budget 0.0001 a paced scan of 2 MiB would rest for minutes."""

    async def main() -> None:
        board = small_board()
        node = Node(tmp_path, "a", board=dataclasses.replace(
            board, cpu=dataclasses.replace(board.cpu, scan_interval=0.2)))
        runtime = ShareRuntime(node.engine, scan_budget=0.0001, slice_seconds=0.001)
        task = asyncio.create_task(runtime.run())
        try:
            await runtime.wait_until(lambda e: e.stats()["scans"] >= 1, timeout=60)
            for i in range(8):
                node.write(f"new/f{i}", os.urandom(256 * 1024))
            scans = node.engine.stats()["scans"]
            # The next periodic scan (not a requested one) finds them.
            # Announced while the scan goes on (early reports), then the pass ends.
            await runtime.wait_until(
                lambda e: e.scanning and e.replica.get("/new/f0") is not None, timeout=60)
            await runtime.wait_until(lambda e: e.stats()["scans"] > scans, timeout=60)
            budget = runtime.last_budget
            assert budget is not None and budget.work_seconds > 0
            assert budget.rest_seconds == 0.0
            assert budget.full_speed_seconds == budget.work_seconds
            assert all(node.engine.replica.get(f"/new/f{i}") is not None for i in range(8))
        finally:
            runtime.stop()
            await task

    asyncio.run(main())
