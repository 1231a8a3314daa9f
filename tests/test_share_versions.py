"""Restoring archived versions against a real share on disk (no daemon).

A real local share (SQLite state, archive folder, path mapper) stands in a
minimal daemon shape; the archive is filled the way the engine fills it
(hard link of the replaced file). The end-to-end path through daemons and the
CLI is in test_versions.py; here are the cases that are hard to reach there:
read-only shares, an archive too small to keep the current file, a deleted
file whose folder is gone, a folder in the way, and a target in another place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from csembed.board_profile import load_board
from csembed.control.errors import ControlRequestError
from csembed.directory.local_share import LocalShare, open_local_share
from csembed.runtime.share_versions import list_versions, restore_version


class Share:
    """A real local share wrapped in the shape the daemon gives share_versions."""

    def __init__(self, tmp: Path, *, level: str = "read_write", archive: int = 1 << 20) -> None:
        board = load_board("desktop")
        self.board = dataclasses.replace(board, storage=dataclasses.replace(
            board.storage, archive_size=archive))
        self.root = tmp / "share"
        self.root.mkdir()
        self.local: LocalShare = open_local_share(self.root, tmp / "state", self.board,
                                                  create=True, rng=random.Random(1))
        self.scans = 0
        runtime = SimpleNamespace(request_scan=self._scan)
        share = SimpleNamespace(entry=SimpleNamespace(path=str(self.root), access_level=level),
                                local=self.local, runtime=runtime, error=None)
        self.daemon: Any = SimpleNamespace(shares={"s": share}, board=self.board)

    def _scan(self) -> None:
        self.scans += 1

    def replaced(self, rel: str, old: bytes, new: bytes) -> None:
        """``rel`` held ``old``; archive it as the engine does, then put ``new`` in place."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(old)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            info = path.stat()
            self.local.archive.take(fd, path.name, key="/" + rel,
                                    sha256=hashlib.sha256(old).hexdigest(), size=len(old),
                                    mtime_ns=info.st_mtime_ns, remove=False)
        finally:
            os.close(fd)
        temp = path.with_name(path.name + ".new")
        temp.write_bytes(new)
        temp.rename(path)

    def restore(self, rel: str, **kwargs: Any) -> dict[str, Any]:
        return asyncio.run(restore_version(self.daemon, str(self.root / rel), **kwargs))

    def close(self) -> None:
        self.local.close()


@pytest.fixture(name="share")
def share_fixture(tmp_path: Path) -> Any:
    share = Share(tmp_path)
    yield share
    share.close()


def _no_temps(root: Path) -> bool:
    return not [n for _, _, names in os.walk(root) for n in names if n.endswith(".!clearsky")]


def test_restore_in_place_keeps_the_current_version_and_asks_for_a_scan(share: Share) -> None:
    share.replaced("a/take.mid", b"one", b"two")
    share.replaced("a/take.mid", b"two", b"three")
    listed = list_versions(share.daemon, str(share.root / "a" / "take.mid"))
    assert listed["file"] == "/a/take.mid"
    assert [v["size"] for v in listed["versions"]] == [3, 3]  # "two", then "one"
    oldest = listed["versions"][-1]["version"]
    reply = share.restore("a/take.mid", version=oldest)
    assert (share.root / "a" / "take.mid").read_bytes() == b"one"
    assert reply["version"] == oldest and share.scans == 1
    # "three" was archived before being replaced: nothing is lost
    shas = {v["sha256"] for v in list_versions(share.daemon,
                                               str(share.root / "a/take.mid"))["versions"]}
    assert hashlib.sha256(b"three").hexdigest() in shas
    # restoring what is already there changes nothing
    share.restore("a/take.mid", version=oldest)
    assert len(list_versions(share.daemon, str(share.root / "a/take.mid"))["versions"]) == 3
    assert _no_temps(share.root)


def test_a_deleted_file_comes_back_with_its_folder(share: Share) -> None:
    share.replaced("deep/er/gone.txt", b"kept", b"x")
    (share.root / "deep" / "er" / "gone.txt").unlink()
    (share.root / "deep" / "er").rmdir()
    share.restore("deep/er/gone.txt")
    assert (share.root / "deep" / "er" / "gone.txt").read_bytes() == b"kept"


def test_restore_elsewhere_never_overwrites_outside_the_share(share: Share,
                                                               tmp_path: Path) -> None:
    share.replaced("n.txt", b"old", b"new")
    out = tmp_path / "copy.txt"
    share.restore("n.txt", to=str(out))
    assert out.read_bytes() == b"old" and (share.root / "n.txt").read_bytes() == b"new"
    with pytest.raises(ControlRequestError) as info:
        share.restore("n.txt", to=str(out))
    assert info.value.code == "exists"
    # into the share under another name: a new local file
    share.restore("n.txt", to=str(share.root / "n (old).txt"))
    assert (share.root / "n (old).txt").read_bytes() == b"old"
    assert _no_temps(share.root) and _no_temps(tmp_path)


def test_refusals_change_nothing(share: Share) -> None:
    share.replaced("f.txt", b"old", b"new")
    (share.root / "d").mkdir()
    with pytest.raises(ControlRequestError) as info:
        share.restore("f.txt", to=str(share.root / "d"))
    assert info.value.code == "not_a_file"
    with pytest.raises(ControlRequestError) as info:
        share.restore("nothing.txt")
    assert info.value.code == "no_versions"
    with pytest.raises(ControlRequestError) as info:
        asyncio.run(restore_version(share.daemon, str(share.root)))
    assert info.value.code == "invalid_argument"
    assert (share.root / "f.txt").read_bytes() == b"new" and _no_temps(share.root)


def test_read_only_share_and_small_archive_refuse_in_place(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    ro = Share(tmp_path / "ro", level="read_only")
    try:
        ro.replaced("f.txt", b"old", b"new")
        with pytest.raises(ControlRequestError) as info:
            ro.restore("f.txt")
        assert info.value.code == "not_permitted"
        ro.restore("f.txt", to=str(tmp_path / "out.txt"))  # out of the share is fine
        assert (tmp_path / "out.txt").read_bytes() == b"old"
    finally:
        ro.close()
    (tmp_path / "small").mkdir()
    small = Share(tmp_path / "small", archive=10)
    try:
        small.replaced("f.txt", b"old", b"a newer version, too big to archive")
        with pytest.raises(ControlRequestError) as info:
            small.restore("f.txt")
        assert info.value.code == "archive_full"
        assert (small.root / "f.txt").read_bytes() == b"a newer version, too big to archive"
        assert _no_temps(small.root)
    finally:
        small.close()
