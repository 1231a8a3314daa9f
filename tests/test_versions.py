"""Archived versions: listed and restored through the CLI of real daemons.

End to end: A shares a folder, B joins; an edit on A reaches B, which archives
the version it replaced; ``csembed versions`` on B lists it; ``csembed
restore`` puts it back crash-safely (the version it replaces is archived in
turn) and the restored content syncs back to A. Unit tests cover choosing a
version (number, time, newest), time parsing, and a corrupted archive copy,
which must change nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Daemon,
    Procs,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

from csembed.cli_commands.versions import parse_time
from csembed.control.errors import ControlRequestError
from csembed.directory.archive import ArchivedFile
from csembed.errors import CsembedError
from csembed.runtime.share_versions import pick_version


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _versions(daemon: Daemon, path: Path) -> list[dict]:
    return json.loads(daemon.cli("versions", path, "--json").stdout)["versions"]


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


@pytest.mark.once
def test_an_edit_from_the_peer_is_archived_listed_restored_and_synced_back(
        procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address)
    pa, pb = procs.root / "A", procs.root / "B"
    (pa / "takes").mkdir(parents=True)
    first = b"etude, first take\n" * 100
    second = b"etude, second take -- better\n" * 90
    (pa / "takes" / "etude.mid").write_bytes(first)
    code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
    b.cli("attach", code, pb, "--timeout", "60")
    target = pb / "takes" / "etude.mid"
    wait_for(lambda: _holds(target, first), "B to receive the first take")
    assert _versions(b, target) == []

    before_edit = time.time()
    (pa / "takes" / "etude.mid").write_bytes(second)
    a.rescan_until_scanned(pa)
    wait_for(lambda: _holds(target, second), "B to receive the edit")

    # B archived the version the edit replaced
    (listed,) = _versions(b, target)
    assert listed["sha256"] == _sha(first) and listed["size"] == len(first)
    assert listed["archived_at"] >= before_edit - 1
    text = b.cli("versions", target).stdout
    assert str(listed["version"]) in text and _sha(first)[:12] in text

    # errors are plain: no such version, no share, both selectors
    wrong = b.cli("restore", target, "--version", "999", check=False)
    assert wrong.returncode == 2 and "no version 999" in wrong.stderr
    outside = b.cli("versions", procs.root / "elsewhere.txt", check=False)
    assert outside.returncode == 2 and "not inside a share" in outside.stderr

    # a copy outside the shares; never over an existing file
    copy = procs.root / "etude-first.mid"
    b.cli("restore", target, "--version", str(listed["version"]), "--to", copy)
    assert copy.read_bytes() == first
    again = b.cli("restore", target, "--to", copy, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr

    # a damaged archive copy is refused and changes nothing
    (stored,) = (b.data / "shares").glob(f"*/archive/{listed['version']:010d}")
    good = stored.read_bytes()
    stored.write_bytes(b"X" + good[1:])
    damaged = b.cli("restore", target, check=False)
    assert damaged.returncode == 2 and "corrupt_version" in damaged.stderr
    assert target.read_bytes() == second
    assert not [n for n in os.listdir(target.parent) if n.endswith(".!clearsky")]
    stored.write_bytes(good)

    # restore in place, by time: the version in place just before the edit
    out = b.cli("restore", target, "--at", str(before_edit)).stdout
    assert f"restored version {listed['version']}" in out
    assert target.read_bytes() == first
    assert not [n for n in os.listdir(target.parent) if n.endswith(".!clearsky")]
    # the content it replaced was archived, not lost
    assert {v["sha256"] for v in _versions(b, target)} == {_sha(first), _sha(second)}

    # the restore is an ordinary local change: it syncs to A, which archives its version
    def a_has_first() -> bool:
        if _holds(pa / "takes" / "etude.mid", first):
            return True
        b.cli("rescan", pb)
        return False

    wait_for(a_has_first, "the restored take to reach A")
    assert _sha(second) in {v["sha256"] for v in _versions(a, pa / "takes" / "etude.mid")}


def _item(id_: int, archived_at: float) -> ArchivedFile:
    return ArchivedFile(id=id_, key="/a", sha256=f"{id_:064x}", size=id_, mtime_ns=0,
                        archived_at=archived_at, name=f"{id_:010d}")


def test_pick_version_by_number_time_or_newest() -> None:
    items = [_item(7, 300.0), _item(4, 200.0), _item(2, 100.0)]  # newest first
    assert pick_version(items).id == 7
    assert pick_version(items, version=4).id == 4
    # in place at 150: the version archived first after 150 (it was the file until 200)
    assert pick_version(items, at=150.0).id == 4
    assert pick_version(items, at=50.0).id == 2
    with pytest.raises(ControlRequestError, match="replaced before that time"):
        pick_version(items, at=300.0)
    with pytest.raises(ControlRequestError, match="no version 5"):
        pick_version(items, version=5)
    with pytest.raises(ControlRequestError, match="not both"):
        pick_version(items, version=4, at=1.0)
    with pytest.raises(ControlRequestError) as info:
        pick_version([])
    assert info.value.code == "no_versions"


def test_parse_time_reads_what_people_write() -> None:
    now = 1_800_000_000.0
    assert parse_time("2h ago", now) == now - 7200
    assert parse_time("1700000000", now) == 1_700_000_000.0
    assert parse_time("2026-12-04T15:30:00Z", now) == 1796398200.0
    assert parse_time("2026-12-04T16:30:00+01:00", now) == 1796398200.0
    for bad in ("banana", "2h", "yesterday ago", "2026-13-40"):
        with pytest.raises(CsembedError, match="cannot read"):
            parse_time(bad, now)
