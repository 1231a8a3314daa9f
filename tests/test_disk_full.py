"""Disk full: the receiver's share lives on a small tmpfs and runs out of space mid-sync.

A (ordinary disk) shares 8 MB in 1 MB files; B joins with its share folder
on a 16 MiB tmpfs of which a filler file (outside the share) takes 10 MiB.
B must fill what it can and stop: every file it holds complete is exactly
A's, no partial shows under a real name, its data directory (on the ordinary
disk) stays intact, and its status says plainly that files are missing for
lack of space -- never "synced". Then the filler is deleted: B must notice
the freed space by itself (no restart, no rescan asked) and finish.

Needs root (to mount the tmpfs); skipped otherwise. B runs a copy of the
desktop board with ``free_space_reserve = 0``, so the tmpfs's real size is
the limit rather than the board's reserve.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)

from csembed.board_profile import boards_dir

FILES = 8
FILE_SIZE = 1_000_000


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _board_without_reserve(root: Path) -> Path:
    text = (boards_dir() / "desktop.toml").read_text()
    text = text.replace('name = "desktop"', 'name = "desktop-no-reserve"')
    text = text.replace('free_space_reserve = "512 MiB"', 'free_space_reserve = "0"')
    assert 'free_space_reserve = "0"' in text
    path = root / "desktop-no-reserve.toml"
    path.write_text(text)
    return path


def _space_problem(share: dict) -> str:
    """The share's own words about missing space, or '' if it says nothing of it."""
    said = json.dumps({k: share.get(k) for k in ("status", "reason", "limits", "failures",
                                                 "notices")})
    return said if any(w in said.lower() for w in ("space", "disk_full", "full")) else ""


@pytest.mark.once
def test_receiver_out_of_space_reports_it_and_finishes_once_space_frees(procs: Procs) -> None:
    small = procs.root / "small"
    _mount_tmpfs(small, "16m")
    try:
        filler = small / "filler.bin"
        filler.write_bytes(bytes(10 << 20))
        a = procs.daemon("a")
        b = procs.daemon("b", "--peer", a.address, board=str(_board_without_reserve(procs.root)))
        pa, pb = procs.root / "A", small / "B"
        pa.mkdir()
        for i in range(FILES):
            (pa / f"take{i}.wav").write_bytes(os.urandom(FILE_SIZE))
        (pa / "notes.txt").write_text("the small things still fit\n")
        wanted = tree(pa)
        code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
        b.cli("attach", code, pb, "--json", "--timeout", "60")

        def stuck_for_space() -> str:
            share = b.share(pb) or {}
            if share.get("transfers"):
                return ""
            return _space_problem(share)

        said = wait_for(stuck_for_space, "B to stop for lack of space and say so")
        share = b.share(pb) or {}
        held = tree(pb)
        complete = {n: h for n, h in held.items() if h not in ("dir", "partial", "vanished")}
        assert complete, "B should have fitted some files"
        assert len([n for n in complete if n.endswith(".wav")]) < FILES
        for name, digest in complete.items():
            assert wanted.get(name) == digest, f"{name} landed with the wrong content"
        assert all(Path(n).name.startswith(".") for n, h in held.items() if h == "partial")
        assert share.get("status") != "synced", share
        # every missing file is counted: as still to sync, or named with the limit it hit
        missing = {n for n, h in wanted.items() if h != "dir"} - set(complete)
        named = {entry.get("key", "").lstrip("/")
                 for entry in share.get("limits", []) + share.get("held_back", [])}
        assert share.get("files_to_sync", 0) >= len(missing) or missing <= named, \
            json.dumps(share)
        print(f"B while out of space: {said}")

        filler.unlink()
        wait_for(lambda: tree(pb) == wanted, "B to finish once space was freed", timeout=120)
        wait_for(lambda: (b.share(pb) or {}).get("status") == "synced", "B's status to say so")
    finally:
        procs.stop_all()
        subprocess.run(["umount", "-l", str(small)], check=False)
