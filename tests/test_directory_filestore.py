"""The file store: downloads, resume, verification, conflicts, archive, dedup, limits."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
from pathlib import Path

import pytest
from test_directory_support import make_share, reopen, tmpfs

from csembed.directory import disk_sync
from csembed.directory import filestore as filestore_module
from csembed.directory.errors import (
    DirectoryError,
    LocalChangeConflict,
    StorageLimitError,
    VerificationError,
)
from csembed.directory.filestore import FileStore, StoreLimits, conflict_name, temp_name
from csembed.directory.records import FileValue

MTIME = 1_396_182_929_113_243_778


def _value(data: bytes, mode: int | None = 0o640, mtime: int | None = MTIME) -> FileValue:
    return FileValue.for_file(len(data), hashlib.sha256(data).hexdigest(), mtime, mode)


def _download(share, key: str, data: bytes, chunk: int = 1000, **value_args):
    with share.store.begin(key, _value(data, **value_args)) as download:
        for start in range(download.offset, len(data), chunk):
            download.write(data[start:start + chunk])
        return download.commit()


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".!clearsky")]


def test_download_lands_with_mode_and_mtime(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = os.urandom(10_000)
    result = _download(share, "/new/dir/file.bin", data)
    path = share.root / "new/dir/file.bin"
    assert path.read_bytes() == data
    info = path.stat()
    assert info.st_mtime_ns == MTIME and info.st_mode & 0o7777 == 0o640
    assert result.entry.sha256 == hashlib.sha256(data).hexdigest() and result.archived is None
    assert _temps(path.parent) == []
    # The scanner sees our own writes (file and the folders made for it) as recorded.
    scan = share.scan_commit()
    assert [e.key for e in scan.events] == ["/"]


def test_a_file_in_an_existing_folder_costs_no_mkdir_and_no_failed_open(tmp_path: Path,
                                                                         monkeypatch) -> None:
    # Many small files arrive into folders that already exist: the folders are
    # opened before any mkdir, and the temp is created before looking for a partial.
    share = make_share(tmp_path)
    _download(share, "/d/e/first", b"1")  # makes the folders
    calls: list[str] = []
    real_mkdir, real_open = os.mkdir, os.open

    def mkdir(*args, **kwargs):
        calls.append("mkdir")
        return real_mkdir(*args, **kwargs)

    def opener(path, flags, *args, **kwargs):
        try:
            return real_open(path, flags, *args, **kwargs)
        except FileNotFoundError:
            calls.append(f"missing {path}")
            raise

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", opener)
    _download(share, "/d/e/second", b"2")
    assert calls == []
    assert (share.root / "d/e/second").read_bytes() == b"2"


def test_peer_set_uid_bits_are_dropped(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    _download(share, "/tool", b"#!/bin/sh\n", mode=0o4755)
    assert (share.root / "tool").stat().st_mode & 0o7777 == 0o755
    _download(share, "/plain", b"x", mode=None, mtime=None)
    assert (share.root / "plain").stat().st_mode & 0o7777 == 0o644


def test_bad_content_never_replaces_a_good_file(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    good = b"good content"
    (share.root / "doc.txt").write_bytes(good)
    share.scan_commit()
    wanted = _value(b"the real new content")
    download = share.store.begin("/doc.txt", wanted)
    download.write(b"forged  new content!")  # right length, wrong bytes
    with pytest.raises(VerificationError):
        download.commit()
    assert (share.root / "doc.txt").read_bytes() == good
    assert _temps(share.root) == []


def test_oversized_stream_is_refused(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    with share.store.begin("/f", _value(b"1234")) as download:
        download.write(b"12")
        with pytest.raises(VerificationError, match="more than"):
            download.write(b"345")
        with pytest.raises(DirectoryError, match="only 2 of 4"):
            download.commit()
    assert not (share.root / "f").exists()


def test_resume_after_interruption_and_after_restart(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = os.urandom(50_000)
    value = _value(data)
    download = share.store.begin("/big.bin", value)
    download.write(data[:20_000])
    download.abort()  # connection dropped: partial kept
    assert len(_temps(share.root)) == 1
    assert not (share.root / "big.bin").exists()
    # "Crash": a new process finds the partial by its deterministic name.
    again = reopen(share)
    download = again.store.begin("/big.bin", value)
    assert download.offset == 20_000 and download.remaining == 30_000
    download.write(data[20_000:])
    download.commit()
    assert (share.root / "big.bin").read_bytes() == data
    assert _temps(share.root) == []


def test_corrupt_partial_is_caught_and_restarted(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = os.urandom(8000)
    value = _value(data)
    name = temp_name("f", value.sha256 or "", 255)
    (share.root / name).write_bytes(b"\x00" * 3000)  # garbage left by a crash
    download = share.store.begin("/f", value)
    assert download.offset == 3000
    download.write(data[3000:])
    with pytest.raises(VerificationError):
        download.commit()
    assert _temps(share.root) == []
    _download(share, "/f", data)
    assert (share.root / "f").read_bytes() == data


def test_partial_longer_than_the_file_is_discarded(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    value = _value(b"short")
    (share.root / temp_name("f", value.sha256 or "", 255)).write_bytes(b"much too long")
    with share.store.begin("/f", value) as download:
        assert download.offset == 0


def test_long_names_get_bounded_temp_names() -> None:
    sha = "ab" * 32
    name = temp_name("x" * 250, sha, 255)
    assert len(name.encode()) <= 255 and name.endswith(".abababababababab.!clearsky")
    assert temp_name("x" * 250, sha, 255) != temp_name("x" * 249 + "y", sha, 255)


def test_unseen_local_change_is_a_conflict(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "notes.txt").write_bytes(b"v1")
    share.scan_commit()
    (share.root / "notes.txt").write_bytes(b"v1 edited locally")
    remote = b"v2 from the peer"
    download = share.store.begin("/notes.txt", _value(remote))
    download.write(remote)
    with pytest.raises(LocalChangeConflict):
        download.commit()
    assert (share.root / "notes.txt").read_bytes() == b"v1 edited locally"
    # The engine decides the local edit loses: move it aside, then commit.
    share.scan_commit()  # the scanner records the local edit first
    loser = share.store.conflict_key("/notes.txt")
    assert re.fullmatch(r"/notes\.CONFLICT\.[A-Za-z0-9]{8}\.txt", loser)
    share.store.rename_local("/notes.txt", loser)
    download.commit()
    assert (share.root / "notes.txt").read_bytes() == remote
    assert (share.root / loser[1:]).read_bytes() == b"v1 edited locally"
    assert share.scan_commit(share.settled_now() + 60).events == []


def test_remote_loser_goes_to_its_conflict_name(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a.txt").write_bytes(b"local")
    share.scan_commit()
    loser = share.store.conflict_key("/a.txt")
    with share.store.begin("/a.txt", _value(b"remote")) as download:
        download.write(b"remote")
        result = download.commit(loser)
    assert result.key == loser
    assert (share.root / "a.txt").read_bytes() == b"local"
    assert (share.root / loser[1:]).read_bytes() == b"remote"


def test_unrecorded_file_or_symlink_in_the_way(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"do not touch")
    (share.root / "link").symlink_to(outside)
    (share.root / "fresh").write_bytes(b"user made this just now")
    for key in ("/link", "/fresh"):
        with share.store.begin(key, _value(b"peer")) as download:
            download.write(b"peer")
            with pytest.raises(LocalChangeConflict, match="never recorded"):
                download.commit()
    assert outside.read_bytes() == b"do not touch"
    assert (share.root / "link").is_symlink()
    assert (share.root / "fresh").read_bytes() == b"user made this just now"


def test_conflict_names() -> None:
    rng = random.Random(1)
    assert re.fullmatch(r"foo\.CONFLICT\.[A-Za-z0-9]{8}\.txt", conflict_name("foo.txt", rng))
    assert re.fullmatch(r"foo\.CONFLICT\.[A-Za-z0-9]{8}", conflict_name("foo", rng))
    assert re.fullmatch(r"\.bashrc\.CONFLICT\.[A-Za-z0-9]{8}", conflict_name(".bashrc", rng))
    assert re.fullmatch(r"a\.tar\.CONFLICT\.[A-Za-z0-9]{8}\.gz", conflict_name("a.tar.gz", rng))
    assert conflict_name("x.y", random.Random(5)) == conflict_name("x.y", random.Random(5))


def test_replaced_and_deleted_files_are_archived(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a").write_bytes(b"version one")
    (share.root / "b").write_bytes(b"to be deleted")
    share.scan_commit()
    inode = (share.root / "a").stat().st_ino
    result = _download(share, "/a", b"version two")
    assert result.archived is not None and result.archived.key == "/a"
    archived = share.archive.directory / result.archived.name
    assert archived.read_bytes() == b"version one"
    assert archived.stat().st_ino == inode  # linked, not copied
    assert share.store.delete("/b")
    assert not (share.root / "b").exists()
    [item] = share.archive.find_sha256(hashlib.sha256(b"to be deleted").hexdigest())
    assert (share.archive.directory / item.name).read_bytes() == b"to be deleted"
    assert share.scan_commit(share.settled_now() + 60).events == []


def test_archive_cap_evicts_oldest_first(tmp_path: Path) -> None:
    share = make_share(tmp_path, archive_cap=2500)
    for i in range(4):
        (share.root / f"f{i}").write_bytes(bytes([i]) * 1000)
    (share.root / "huge").write_bytes(b"h" * 3000)
    share.scan_commit()
    for i in range(4):
        assert share.store.delete(f"/f{i}")
    kept = share.archive.entries()
    assert [e.key for e in kept] == ["/f2", "/f3"]
    assert share.archive.total_bytes() == 2000
    assert sorted(p.name for p in share.archive.directory.iterdir()) == sorted(
        e.name for e in kept)
    assert share.store.delete("/huge")  # over the cap: removed, not archived
    assert [e.key for e in share.archive.entries()] == ["/f2", "/f3"]


def test_archive_reconciles_after_a_crash(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a").write_bytes(b"aaa")
    share.scan_commit()
    share.store.delete("/a")
    [item] = share.archive.entries()
    (share.archive.directory / "stray").write_bytes(b"orphan")
    (share.archive.directory / item.name).unlink()
    again = reopen(share)
    assert again.archive.entries() == [] and list(again.archive.directory.iterdir()) == []


def test_archive_across_filesystems_copies(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", size="1m"):
        share = make_share(tmp_path / "mnt")
        from csembed.directory.archive import Archive

        share.store.archive = Archive(tmp_path / "other-archive", share.cache._conn, 1 << 20)
        (share.root / "a").write_bytes(b"old")
        (share.root / "b").write_bytes(b"gone")
        share.scan_commit()
        result = _download(share, "/a", b"new")
        assert result.archived is not None
        assert (tmp_path / "other-archive" / result.archived.name).read_bytes() == b"old"
        share.store.delete("/b")
        assert not (share.root / "b").exists()
        assert len(share.store.archive.entries()) == 2


def test_dedup_copies_local_content(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = os.urandom(20_000)
    (share.root / "original.bin").write_bytes(data)
    share.scan_commit()
    result = share.store.copy_local("/copy/of.bin", _value(data))
    assert result is not None and (share.root / "copy/of.bin").read_bytes() == data
    assert (share.root / "copy/of.bin").stat().st_ino != (share.root / "original.bin").stat().st_ino
    assert share.store.copy_local("/x", _value(b"nowhere")) is None


def test_dedup_skips_sources_changed_since_their_scan(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = b"shared content"
    (share.root / "src").write_bytes(data)
    share.scan_commit()
    (share.root / "src").write_bytes(b"edited content")  # not rescanned yet
    assert share.store.copy_local("/dst", _value(data)) is None
    assert not (share.root / "dst").exists() and _temps(share.root) == []


def test_dedup_from_archive(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a").write_bytes(b"remember me")
    share.scan_commit()
    share.store.delete("/a")
    result = share.store.copy_local("/restored", _value(b"remember me"))
    assert result is not None and (share.root / "restored").read_bytes() == b"remember me"


@pytest.mark.parametrize(("limits", "size", "name"), [
    (StoreLimits(max_file_size=100), 101, "max_file_size"),
    (StoreLimits(quota=1000), 600, "quota"),
    (StoreLimits(free_space_reserve=1 << 60), 1, "free_space_reserve"),
])
def test_limits_are_checked_before_writing(tmp_path: Path, limits, size: int, name: str) -> None:
    share = make_share(tmp_path, limits=limits)
    (share.root / "existing").write_bytes(b"e" * 500)
    share.scan_commit()
    with pytest.raises(StorageLimitError) as caught:
        share.store.begin("/new", _value(b"n" * size))
    assert caught.value.limit == name and name in str(caught.value)
    assert _temps(share.root) == [] and not (share.root / "new").exists()


def test_quota_counts_the_file_being_replaced(tmp_path: Path) -> None:
    share = make_share(tmp_path, limits=StoreLimits(quota=1000))
    (share.root / "f").write_bytes(b"x" * 900)
    share.scan_commit()
    _download(share, "/f", b"y" * 950)  # 950 replaces 900: fits


def test_disk_full_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    share = make_share(tmp_path)
    (share.root / "f").write_bytes(b"precious")
    share.scan_commit()
    real_write = os.write

    def full(fd, data):
        if os.fstat(fd).st_size >= 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(filestore_module.os, "write", full)
    data = os.urandom(20_000)
    with pytest.raises(StorageLimitError) as caught:
        _download(share, "/f", data)
    assert caught.value.limit == "disk_full"
    assert (share.root / "f").read_bytes() == b"precious" and _temps(share.root) == []


def test_real_enospc_on_a_small_filesystem(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", size="256k"):
        share = make_share(tmp_path / "mnt", archive_cap=0)
        (share.root / "f").write_bytes(b"precious")
        share.scan_commit()
        data = os.urandom(100_000)
        download = share.store.begin("/f", FileValue.for_file(
            len(data), hashlib.sha256(data).hexdigest(), None, 0o644))  # fits, when checked
        filler = share.root.parent / "filler"
        with open(filler, "wb", buffering=0) as fh:  # then another program fills the disk
            with pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        with pytest.raises(StorageLimitError, match="disk_full"):
            for start in range(0, len(data), 8192):
                download.write(data[start:start + 8192])
            download.commit()
        assert (share.root / "f").read_bytes() == b"precious" and _temps(share.root) == []


def test_delete_respects_local_changes_and_folders(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "d").mkdir()
    (share.root / "d/f").write_bytes(b"1")
    (share.root / "e").mkdir()
    share.scan_commit()
    (share.root / "d/f").write_bytes(b"changed locally")
    with pytest.raises(LocalChangeConflict):
        share.store.delete("/d/f")
    assert (share.root / "d/f").exists()
    assert share.store.delete("/d") is False  # still holds a file
    assert share.store.delete("/e") is True and not (share.root / "e").exists()
    assert share.store.delete("/never") is False


def test_make_directory(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    share.store.make_directory("/a/b", FileValue.for_directory(0o750))
    assert (share.root / "a/b").stat().st_mode & 0o777 == 0o750
    (share.root / "file").write_bytes(b"x")
    with pytest.raises(LocalChangeConflict):
        share.store.make_directory("/file", FileValue.for_directory(0o755))
    assert [e.key for e in share.scan_commit().events] == ["/", "/file"]  # not "/a", "/a/b"


def test_flash_policy_defers_folder_syncs(tmp_path: Path) -> None:
    share = make_share(tmp_path, write_policy="flash")
    _download(share, "/a", b"1")
    _download(share, "/b", b"2")
    assert len(share.store._deferred) == 1
    share.store.flush()
    assert len(share.store._deferred) == 0


def test_stale_temps_are_removed_only_when_old(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    download = share.store.begin("/sub/f", _value(b"data"))
    download.write(b"da")
    download.abort()
    [temp] = share.scan_commit().temp_files
    assert share.store.remove_stale_temp(temp, older_than_ns=0) is False
    assert share.store.remove_stale_temp(temp, older_than_ns=1 << 62) is True
    assert _temps(share.root / "sub") == []


_CRASHER = """
import hashlib, os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_directory_support import reopen_at
from csembed.directory.records import FileValue
share = reopen_at(Path({root!r}), Path({state!r}))
data = bytes.fromhex(sys.argv[1])
value = FileValue.for_file(len(data), hashlib.sha256(data).hexdigest(), None, 0o644)
download = share.store.begin("/doc", value)
download.write(data[: len(data) // 2])
download._drain()
os._exit(9)  # killed mid-download: no cleanup of any kind
"""


def test_process_killed_mid_download(tmp_path: Path) -> None:
    import subprocess
    import sys

    share = make_share(tmp_path)
    (share.root / "doc").write_bytes(b"the good old version")
    share.scan_commit()
    data = os.urandom(9000)
    script = _CRASHER.format(tests=str(Path(__file__).parent), root=str(share.root),
                             state=str(share.state))
    done = subprocess.run([sys.executable, "-c", script, data.hex()], capture_output=True)
    assert done.returncode == 9, done.stderr
    assert (share.root / "doc").read_bytes() == b"the good old version"
    assert len(_temps(share.root)) == 1
    again = reopen(share)
    download = again.store.begin("/doc", _value(data, mode=0o644, mtime=None))
    assert download.offset == 4500
    download.write(data[4500:])
    download.commit()
    assert (share.root / "doc").read_bytes() == data and _temps(share.root) == []


def test_rename_local_folder_follows_a_peer_rename(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "old/sub").mkdir(parents=True)
    (share.root / "old/sub/f").write_bytes(b"f")
    (share.root / "old/g").write_bytes(b"g")
    share.scan_commit()
    share.store.rename_local("/old", "/new/place")
    assert (share.root / "new/place/sub/f").read_bytes() == b"f"
    assert "/new/place/sub/f" in share.cache and "/old/g" not in share.cache
    # The children's own record moves then find them in place; nothing to report.
    assert [e.key for e in share.scan_commit(share.settled_now() + 60).events] == []


def test_encoded_names_round_trip_through_download_and_scan(tmp_path: Path) -> None:
    from csembed.directory.disk_names import NameRules

    share = make_share(tmp_path, rules=NameRules(case_insensitive=True, windows_names=True))
    _download(share, "/Q&A: part 1?/Notes.txt", b"n")
    _download(share, "/Q&A: part 1?/notes.txt", b"m")
    assert sorted(os.listdir(share.root / "Q&A%3A part 1%3F")) == ["Notes.txt", "_notes.txt"]
    assert [e.key for e in share.scan_commit().events] == ["/"]
    again = reopen(share)
    assert again.scan_commit(share.settled_now() + 60).events == []
    with again.reader.open(hashlib.sha256(b"m").hexdigest()) as source:  # type: ignore[union-attr]
        assert source.origin == "/Q&A: part 1?/notes.txt"


# -- batched commits: shared syncs -------------------------------------------------------


def _verified(share, key: str, data: bytes):
    download = share.store.begin(key, _value(data))
    download.write(data)
    download.verify()
    return download


def _batch(share, count: int) -> tuple[list, dict[str, bytes]]:
    contents = {f"/d{i % 3}/f{i:02d}": os.urandom(300 + i) for i in range(count)}
    return [_verified(share, key, data) for key, data in contents.items()], contents


def _count_syncs(monkeypatch, syncfs) -> dict[str, int]:
    calls = {"fsync": 0, "syncfs": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls["fsync"] += 1
        real_fsync(fd)

    def counted_syncfs(fd: int) -> int:
        calls["syncfs"] += 1
        return syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(disk_sync, "_syncfs", counted_syncfs if syncfs else None)
    return calls


def _check_landed(share, contents: dict[str, bytes], results) -> None:
    for (key, data), result in zip(contents.items(), results, strict=True):
        assert result.key == key and result.entry.sha256 == hashlib.sha256(data).hexdigest()
        path = share.root / key[1:]
        assert path.read_bytes() == data and path.stat().st_mtime_ns == MTIME
        assert _temps(path.parent) == []
    # The scanner sees our own writes (files and the folders made for them) as recorded.
    assert [e.key for e in share.scan_commit().events] == ["/"]
    assert reopen(share).cache.get("/d0/f00") is not None  # committed to the database


@pytest.mark.skipif(disk_sync._syncfs is None, reason="libc has no syncfs")
def test_batch_commit_pays_two_syncfs_for_many_files(tmp_path: Path, monkeypatch) -> None:
    share = make_share(tmp_path)
    downloads, contents = _batch(share, 24)
    calls = _count_syncs(monkeypatch, disk_sync._syncfs)
    results = share.store.commit_batch(downloads)
    # one for the temps' data before the renames, one for the three folders after
    assert calls == {"fsync": 0, "syncfs": 2}
    _check_landed(share, contents, results)


def test_batch_commit_without_syncfs_syncs_each_file_and_folder(tmp_path: Path,
                                                                monkeypatch) -> None:
    share = make_share(tmp_path)
    downloads, contents = _batch(share, 24)
    calls = _count_syncs(monkeypatch, None)
    results = share.store.commit_batch(downloads)
    assert calls == {"fsync": 24 + 3, "syncfs": 0}
    _check_landed(share, contents, results)


def test_batch_commit_under_flash_policy_defers_the_folders(tmp_path: Path,
                                                           monkeypatch) -> None:
    share = make_share(tmp_path, write_policy="flash")
    downloads, contents = _batch(share, 12)
    calls = _count_syncs(monkeypatch, None)
    results = share.store.commit_batch(downloads)
    assert calls["fsync"] == 12 and len(share.store._deferred) == 3  # data now, folders later
    share.store.flush()
    assert calls["fsync"] == 12 + 3
    _check_landed(share, contents, results)


def test_batch_commit_keeps_an_unseen_local_change_and_lands_the_rest(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "notes.txt").write_bytes(b"v1")
    share.scan_commit()
    (share.root / "notes.txt").write_bytes(b"v1 edited locally")
    first = _verified(share, "/a.bin", b"aaa")
    clash = _verified(share, "/notes.txt", b"v2 from the peer")
    last = _verified(share, "/b.bin", b"bbb")
    results = share.store.commit_batch([first, clash, last])
    assert isinstance(results[1], LocalChangeConflict)
    assert (share.root / "notes.txt").read_bytes() == b"v1 edited locally"
    assert (share.root / "a.bin").read_bytes() == b"aaa"
    assert (share.root / "b.bin").read_bytes() == b"bbb"
    # The verified temp is still open: the engine keeps it as a conflict copy.
    aside = share.store.conflict_key("/notes.txt")
    clash.commit(aside)
    assert (share.root / aside[1:]).read_bytes() == b"v2 from the peer"
    assert _temps(share.root) == []


def test_verify_refuses_bad_content_before_any_batch(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "doc").write_bytes(b"good")
    share.scan_commit()
    download = share.store.begin("/doc", _value(b"what the record says"))
    download.write(b"something else here!")
    with pytest.raises(VerificationError):
        download.verify()
    assert (share.root / "doc").read_bytes() == b"good" and _temps(share.root) == []


_BATCH_CRASHER = """
import hashlib, os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_directory_support import reopen_at
from csembed.directory.disk_sync import sync_files
from csembed.directory.records import FileValue
share = reopen_at(Path({root!r}), Path({state!r}))
downloads = []
for i, hexdata in enumerate(sys.argv[1:]):
    data = bytes.fromhex(hexdata)
    value = FileValue.for_file(len(data), hashlib.sha256(data).hexdigest(), None, 0o644)
    download = share.store.begin(f"/doc{{i}}", value)
    download.write(data)
    download.verify()
    downloads.append(download)
sync_files([d.fd for d in downloads])
os._exit(9)  # killed with the batch verified and durable, before any rename
"""


def test_process_killed_before_a_batch_lands(tmp_path: Path) -> None:
    import subprocess
    import sys

    share = make_share(tmp_path)
    for i in range(3):
        (share.root / f"doc{i}").write_bytes(b"the good old version")
    share.scan_commit()
    datas = [os.urandom(5000) for _ in range(3)]
    script = _BATCH_CRASHER.format(tests=str(Path(__file__).parent), root=str(share.root),
                                   state=str(share.state))
    done = subprocess.run([sys.executable, "-c", script, *(d.hex() for d in datas)],
                          capture_output=True)
    assert done.returncode == 9, done.stderr
    for i in range(3):
        assert (share.root / f"doc{i}").read_bytes() == b"the good old version"
    assert len(_temps(share.root)) == 3
    again = reopen(share)
    downloads = []
    for i, data in enumerate(datas):
        download = again.store.begin(f"/doc{i}", _value(data, mode=0o644, mtime=None))
        assert download.complete and download.offset == len(data)  # nothing to fetch again
        download.verify()
        downloads.append(download)
    again.store.commit_batch(downloads)
    assert [(share.root / f"doc{i}").read_bytes() for i in range(3)] == datas
    assert _temps(share.root) == []


# -- temp files are never written through a planted link (issue 10 item 6) ---------------


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_a_link_planted_at_the_temp_name_is_never_written_through(tmp_path: Path,
                                                                  kind: str) -> None:
    share = make_share(tmp_path)
    data = os.urandom(5000)
    value = _value(data)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"victim's bytes")
    temp = share.root / temp_name("f.bin", value.sha256 or "", 255)
    if kind == "hardlink":
        os.link(victim, temp)
    else:
        os.symlink(victim, temp)
    with share.store.begin("/f.bin", value) as download:
        assert download.offset == 0  # the planted file is not resumed
        download.write(data)
        download.commit()
    assert victim.read_bytes() == b"victim's bytes" and os.stat(victim).st_nlink == 1
    assert (share.root / "f.bin").read_bytes() == data
    assert _temps(share.root) == []


def test_small_file_writes_never_follow_a_planted_temp(tmp_path: Path) -> None:
    from csembed.atomic_file import write_atomic
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"victim")
    target = tmp_path / "state" / "file.json"
    target.parent.mkdir()
    os.link(victim, target.with_name(f".file.json.{os.getpid()}.tmp"))
    write_atomic(target, b"ours")
    assert victim.read_bytes() == b"victim" and target.read_bytes() == b"ours"


# -- space is reserved when a download starts (issue 10 item 11) ---------------------------


def test_concurrent_downloads_reserve_quota_and_release_it(tmp_path: Path) -> None:
    share = make_share(tmp_path, limits=StoreLimits(quota=1000))
    first = share.store.begin("/one", _value(b"1" * 600))
    with pytest.raises(StorageLimitError) as caught:
        share.store.begin("/two", _value(b"2" * 600))  # would pass without reservations
    assert caught.value.limit == "quota" and "reserved" in str(caught.value)
    first.abort(keep_partial=False)  # released on failure
    with share.store.begin("/two", _value(b"2" * 600)) as second:
        second.write(b"2" * 600)
        second.commit()
    assert share.store.reserved == (0, 0)  # released on finish


def test_shares_under_one_quota_share_their_reservations(tmp_path: Path) -> None:
    class Daemon:
        def usage(self) -> int:
            return 0
    daemon = Daemon()  # each share gets daemon.usage: a new but equal bound method
    stores = []
    for name in ("one", "two"):
        share = make_share(tmp_path, name=name)
        stores.append(FileStore(share.mapper, share.cache, limits=StoreLimits(quota=1000),
                                usage=daemon.usage))
    first = stores[0].begin("/a", _value(b"1" * 600))
    with pytest.raises(StorageLimitError, match="reserved"):
        stores[1].begin("/b", _value(b"2" * 600))
    first.abort(keep_partial=False)
    stores[1].begin("/b", _value(b"2" * 600)).abort(keep_partial=False)
