"""csembed.atomic_file: the one crash-safe whole-file write (keys, settings, rdiff output)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from csembed.atomic_file import atomic_output, write_atomic


def test_write_atomic_replaces_with_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_a_failure_inside_the_block_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target, suffix=".!clearsky") as f:
        f.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_the_temp_sits_beside_the_target_with_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    with atomic_output(target, suffix=".!clearsky", fsync=False) as f:
        temps = [p.name for p in tmp_path.iterdir()]
        f.write(b"x")
    assert len(temps) == 1 and temps[0].startswith(".f.bin.") and temps[0].endswith(".!clearsky")
    assert target.read_bytes() == b"x"


def test_a_symlink_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"victim")
    target = tmp_path / "link"
    os.symlink(victim, target)
    write_atomic(target, b"ours")
    assert victim.read_bytes() == b"victim"
    assert not target.is_symlink() and target.read_bytes() == b"ours"
