"""The scanner on real directories: listing first, caching, debounce, moves, errors."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from test_directory_support import SETTLE, kinds, make_share, tmpfs

from csembed.directory import scanner as scanner_module
from csembed.directory import tree_listing
from csembed.directory.errors import ShareUnavailable
from csembed.directory.records import FileValue
from csembed.directory.scan_events import Added, Deleted, Modified, Moved
from csembed.directory.selection import PatternSet, Selection


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_first_scan_lists_everything_before_hashing(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"a.txt": b"alpha", "d/b.bin": os.urandom(10_000), "d/e/c": b""})
    scan = share.scanner.start(share.settled_now())
    try:
        assert set(scan.listing) == {"/", "/a.txt", "/d", "/d/b.bin", "/d/e", "/d/e/c"}
        assert scan.hashed_files == 0 and scan.pending_files == 3
        scan.run()
        result = scan.finish()
    finally:
        scan.close()
    assert result.hashed_files == 3 and result.hashed_bytes == 10_005
    assert all(isinstance(e, Added) for e in result.events)
    by_key = {e.key: e for e in result.events if isinstance(e, Added)}
    assert by_key["/a.txt"].value == FileValue.for_file(
        5, _sha(b"alpha"), (share.root / "a.txt").stat().st_mtime_ns, 0o644)
    assert by_key["/"].value.is_directory and by_key["/d/e"].value.is_directory
    assert by_key["/d/e/c"].value.sha256 == _sha(b"")
    # Parents come before children.
    order = [e.key for e in result.events if isinstance(e, Added)]
    assert order.index("/d") < order.index("/d/e") < order.index("/d/e/c")


def test_unchanged_tree_is_not_rehashed(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {f"f{i}": bytes([i]) * 100 for i in range(20)})
    first = share.scan_commit()
    assert first.hashed_files == 20
    again = share.scan_commit()
    assert again.events == [] and again.hashed_files == 0 and again.pending == 0


def test_cache_survives_restart(tmp_path: Path) -> None:
    from test_directory_support import reopen

    share = make_share(tmp_path)
    _tree(share.root, {"a": b"1", "b": b"2"})
    share.scan_commit()
    restarted = reopen(share)
    result = restarted.scan_commit()
    assert result.events == [] and result.hashed_files == 0


def test_modification_touch_and_mode(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"a": b"one", "b": b"two"})
    share.scan_commit()
    (share.root / "a").write_bytes(b"three")
    os.utime(share.root / "b", ns=(1, 1))  # touch only: no event
    result = share.scan_commit()
    assert kinds(result) == [("Modified", "/a")]
    event = result.events[0]
    assert isinstance(event, Modified)
    assert event.previous.sha256 == _sha(b"one") and event.value.sha256 == _sha(b"three")
    assert share.scan_commit().hashed_files == 0  # the touch was recorded silently
    os.chmod(share.root / "b", 0o600)
    result = share.scan_commit()
    assert kinds(result) == [("Modified", "/b")]
    assert isinstance(result.events[0], Modified) and result.events[0].value.unix_mode == 0o600


def test_debounce_with_fake_clock(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    share.scan_commit()  # the root
    t0 = time.time()
    (share.root / "rec.wav").write_bytes(b"x" * 100)
    r = share.scanner.scan(t0)
    assert r.events == [] and r.pending == 1 and r.next_check == pytest.approx(t0 + SETTLE)
    assert share.scanner.scan(t0 + 1.0).events == []
    with open(share.root / "rec.wav", "ab") as fh:  # still being written
        fh.write(b"y" * 100)
    r = share.scanner.scan(t0 + 1.5)
    assert r.events == [] and r.next_check == pytest.approx(t0 + 1.5 + SETTLE)
    assert share.scanner.scan(t0 + 3.0).events == []  # 1.5 s after the last change
    r = share.scanner.scan(t0 + 3.6)
    assert kinds(r) == [("Added", "/rec.wav")]
    assert isinstance(r.events[0], Added) and r.events[0].value.size == 200
    assert r.pending == 0 and r.next_check is None


def test_deletion_is_debounced_too(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"doc.txt": b"text"})
    share.scan_commit()
    (share.root / "doc.txt").unlink()
    t = share.settled_now()
    assert share.scanner.scan(t).events == []
    (share.root / "doc.txt").write_bytes(b"new text")  # editor saved by delete + create
    result = share.scanner.scan(t + 1)
    assert result.events == []  # the deletion never settled
    result = share.scanner.scan(share.settled_now() + 60)
    assert kinds(result) == [("Modified", "/doc.txt")]


def test_rename_is_a_move(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"a/song.mp3": b"la" * 1000, "a/other": b"o"})
    share.scan_commit()
    os.rename(share.root / "a/song.mp3", share.root / "a/renamed.mp3")
    (share.root / "b").mkdir()
    os.rename(share.root / "a/other", share.root / "b/other")
    t = share.settled_now()
    # The new names look settled at once (old change times) but their old
    # names were only just seen missing: the moves wait for both sides.
    assert kinds(share.scan_commit(t)) == [("Added", "/b")]
    result = share.scan_commit(t + SETTLE)
    assert kinds(result) == [("Moved", "/a/song.mp3", "/a/renamed.mp3"),
                             ("Moved", "/a/other", "/b/other")]
    moved = [e for e in result.events if isinstance(e, Moved)]
    assert all(e.value.same_content(e.previous) for e in moved)
    assert share.scan_commit(share.settled_now() + 60).events == []


def test_directory_rename_moves_everything_under_it(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"old/x": b"1", "old/sub/y": b"2", "old/sub/z": b""})
    share.scan_commit()
    os.rename(share.root / "old", share.root / "new")
    share.scanner.scan(share.settled_now())
    result = share.scan_commit(share.settled_now() + SETTLE)
    assert kinds(result) == [("Moved", "/old", "/new"), ("Moved", "/old/sub", "/new/sub"),
                             ("Moved", "/old/x", "/new/x"), ("Moved", "/old/sub/y", "/new/sub/y"),
                             ("Moved", "/old/sub/z", "/new/sub/z")]
    assert not any(isinstance(e, Added | Deleted) for e in result.events)


def test_copy_then_delete_across_folders_is_a_move(tmp_path: Path) -> None:
    # A new inode (as a move across filesystems would give): paired by content.
    share = make_share(tmp_path)
    data = os.urandom(5000)
    _tree(share.root, {"in/photo.jpg": data, "in/empty": b""})
    share.scan_commit()
    _tree(share.root, {"out/photo.jpg": data, "out/empty": b""})
    (share.root / "in/photo.jpg").unlink()
    (share.root / "in/empty").unlink()
    share.scanner.scan(share.settled_now())
    result = share.scan_commit(share.settled_now() + SETTLE)
    found = sorted(kinds(result))
    assert ("Moved", "/in/photo.jpg", "/out/photo.jpg") in found
    # Empty files are never paired by content (all empty files look alike).
    assert ("Added", "/out/empty") in found and ("Deleted", "/in/empty") in found


def test_directory_copied_then_deleted_is_a_directory_move(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"A/1": b"one", "A/2": b"two"})
    share.scan_commit()
    _tree(share.root, {"B/1": b"one", "B/2": b"two"})
    for name in ("1", "2"):
        (share.root / "A" / name).unlink()
    (share.root / "A").rmdir()
    share.scanner.scan(share.settled_now())
    result = share.scan_commit(share.settled_now() + SETTLE)
    assert sorted(kinds(result)) == [("Moved", "/A", "/B"), ("Moved", "/A/1", "/B/1"),
                                     ("Moved", "/A/2", "/B/2")]


def test_half_seen_move_is_held_for_its_other_side(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = os.urandom(3000)
    _tree(share.root, {"src.bin": data})
    share.scan_commit()
    (share.root / "src.bin").unlink()
    t = share.settled_now()
    assert share.scanner.scan(t).events == []  # deletion seen at t
    (share.root / "dst.bin").write_bytes(data)  # copy appears later (new inode)
    r = share.scanner.scan(t + 1.5)
    assert r.events == []
    r = share.scanner.scan(t + 2.1)  # deletion settled, addition not yet: held
    assert r.events == [] and r.pending == 2
    result = share.scan_commit(t + 3.6)
    assert kinds(result) == [("Moved", "/src.bin", "/dst.bin")]


def test_missing_or_replaced_root_is_an_error_not_a_deletion(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"a": b"1"})
    share.scan_commit()
    os.rename(share.root, tmp_path / "away")
    with pytest.raises(ShareUnavailable):
        share.scanner.scan(share.settled_now())
    share.root.mkdir()  # an empty folder where the share was
    with pytest.raises(ShareUnavailable):
        share.scanner.scan(share.settled_now())
    os.rmdir(share.root)
    os.rename(tmp_path / "away", share.root)
    assert share.scan_commit(share.settled_now() + 60).events == []


def test_links_special_files_and_temps_are_skipped(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    outside = tmp_path / "outside"
    _tree(outside, {"secret": b"s"})
    _tree(share.root, {"real": b"r", "sub/.x.0123456789abcdef.!clearsky": b"partial"})
    (share.root / "link").symlink_to(outside)
    (share.root / "filelink").symlink_to(outside / "secret")
    os.mkfifo(share.root / "pipe")
    result = share.scan_commit()
    assert sorted(kinds(result)) == [("Added", "/"), ("Added", "/real"), ("Added", "/sub")]
    reasons = {n.key: n.reason for n in result.notices}
    assert "symbolic link" in reasons["/link"] and "symbolic link" in reasons["/filelink"]
    assert "special file" in reasons["/pipe"]
    assert result.temp_files == ["/sub/.x.0123456789abcdef.!clearsky"]


def test_undecodable_name_is_a_notice(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    with open(os.fsencode(share.root) + b"/\xff\xfe.txt", "wb") as fh:
        fh.write(b"x")
    result = share.scan_commit()
    assert kinds(result) == [("Added", "/")]
    assert any("UTF-8" in n.reason for n in result.notices)


def test_ignored_paths_are_neither_sent_nor_deleted(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"keep.txt": b"k", "cache.tmp": b"c", "build/out.o": b"o"})
    share.scan_commit()
    share.scanner.selection = Selection(ignore=PatternSet(["*.tmp", "build/"]))
    for _ in range(2):
        result = share.scan_commit(share.settled_now() + 60)
        assert result.events == []
    assert "/cache.tmp" not in share.cache and "/build/out.o" not in share.cache
    (share.root / "new.tmp").write_bytes(b"n")
    assert share.scan_commit(share.settled_now() + 60).events == []


def test_unreadable_folder_hides_nothing_as_deleted(tmp_path: Path, monkeypatch) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"locked/a": b"1", "locked/b": b"2", "open/c": b"3"})
    share.scan_commit()
    real_scandir = os.scandir
    locked_ino = (share.root / "locked").stat().st_ino

    def scandir(fd):
        if os.fstat(fd).st_ino == locked_ino:
            raise PermissionError(13, "Permission denied")
        return real_scandir(fd)

    monkeypatch.setattr(tree_listing.os, "scandir", scandir)
    result = share.scan_commit(share.settled_now() + 60)
    assert result.events == []
    assert any(n.key == "/locked" and "cannot be read" in n.reason for n in result.notices)
    assert "/locked/a" in share.cache


def test_unreadable_file_waits_without_crashing(tmp_path: Path, monkeypatch) -> None:
    share = make_share(tmp_path)
    share.scan_commit()
    _tree(share.root, {"private": b"p", "public": b"q"})
    real_open = os.open

    def deny(path, flags, *args, **kwargs):
        if path == "private":
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(scanner_module.os, "open", deny)
    result = share.scan_commit()
    assert kinds(result) == [("Added", "/public")]
    assert result.pending == 1
    monkeypatch.undo()
    assert kinds(share.scan_commit()) == [("Added", "/private")]


def test_files_vanishing_or_changing_mid_scan(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"known": b"k"})
    share.scan_commit()
    _tree(share.root, {"fleeting": b"f", "growing": b"g" * 10, "stable": b"s"})
    os.utime(share.root / "growing", ns=(1, 1))
    now = share.settled_now()
    scan = share.scanner.start(now)
    try:
        (share.root / "fleeting").unlink()
        (share.root / "known").unlink()
        with open(share.root / "growing", "ab") as fh:
            fh.write(b"more")
        scan.run()
        result = scan.finish()
    finally:
        scan.close()
    share.scanner.commit(result)
    assert kinds(result) == [("Added", "/stable")]
    assert result.pending == 1  # "growing" settles again; "known" was listed unchanged
    result = share.scan_commit(now + 60)
    assert kinds(result) == [("Added", "/growing")] and result.pending == 1
    assert kinds(share.scan_commit(now + 70)) == [("Deleted", "/known")]


def test_hashing_is_paced_by_an_injected_clock(tmp_path: Path) -> None:
    share = make_share(tmp_path)  # io_buffer 4 KiB
    data = os.urandom(64 * 1024)
    _tree(share.root, {"big": data, "small": b"s"})
    ticks = [0.0]

    def clock() -> float:
        ticks[0] += 1.0
        return ticks[0]

    scan = share.scanner.start(share.settled_now())
    steps = 0
    try:
        while not scan.step(until=ticks[0] + 3.5, clock=clock):
            steps += 1
        result = scan.finish()
    finally:
        scan.close()
    assert steps >= 4  # 19 reads (with the end-of-file ones), at most 4 per slice
    big = next(e for e in result.events if isinstance(e, Added) and e.key == "/big")
    assert big.value.sha256 == _sha(data)


def test_a_step_ends_after_max_files(tmp_path: Path) -> None:
    # Small files hash in no time: a slice is also bounded by a count, so what
    # it hashed is written and sent before thousands more are hashed.
    share = make_share(tmp_path)
    _tree(share.root, {f"f{i:02d}": b"x%d" % i for i in range(25)})
    scan = share.scanner.start(share.settled_now())
    taken: list[int] = []
    try:
        while not scan.step(until=float("inf"), clock=time.monotonic, max_files=10):
            early = scan.take_early()
            assert early is not None
            taken.append(len([e for e in early.events if e.key.startswith("/f")]))
            share.scanner.commit(early)
        last = scan.finish()
    finally:
        scan.close()
    assert taken == [10, 10]
    assert len([e for e in last.events if e.key.startswith("/f")]) == 5


def test_file_store_writes_during_a_pass_are_not_reported(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"local": b"l"})
    share.scan_commit()
    scan = share.scanner.start(share.settled_now())
    try:
        value = FileValue.for_file(3, _sha(b"new"), None, 0o644)
        with share.store.begin("/downloaded", value) as download:
            download.write(b"new")
            download.commit()
        share.store.delete("/local")
        scan.run()
        result = scan.finish()
    finally:
        scan.close()
    assert result.events == []
    share.scanner.commit(result)
    assert share.scan_commit(share.settled_now() + 60).events == []


def test_subtree_scan_reports_share_keys(tmp_path: Path) -> None:
    share = make_share(tmp_path, subtree="/Music")
    _tree(share.root, {"a.mp3": b"a"})
    assert sorted(kinds(share.scan_commit())) == [("Added", "/Music"), ("Added", "/Music/a.mp3")]


def test_other_filesystems_are_not_crossed(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _tree(share.root, {"a": b"1"})
    with tmpfs(share.root / "usb"):
        (share.root / "usb" / "stick.txt").write_bytes(b"x")
        result = share.scan_commit()
        assert sorted(kinds(result)) == [("Added", "/"), ("Added", "/a")]
        assert any(n.key == "/usb" and "filesystem" in n.reason for n in result.notices)
