"""Per-share controls through the real CLI against two real daemons on loopback.

``csembed share --sync-mode``, ``csembed mode``, ``csembed pause PATH`` /
``resume PATH`` (kept across a restart) and the ``.csignore`` file, end to
end; the engine-level rules are in ``tests/test_share_controls.py``. Every
wait polls the files or the control socket.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Daemon,
    Procs,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

from csembed.control.commands import parse_request
from csembed.control.errors import ControlRequestError
from csembed.control.handler import ShareMode
from csembed.runtime.data_dir import DataDir, DataDirError, PendingAttach


def _share(daemon: Daemon, path: Path, *options: str) -> str:
    return json.loads(daemon.cli("share", path, "--json", *options).stdout)["access_code"]


def _attach(daemon: Daemon, code: str, path: Path) -> dict:
    return json.loads(daemon.cli("attach", code, path, "--json", "--timeout", "60").stdout)


def _links(daemon: Daemon, path: Path) -> int:
    return int((daemon.share(path) or {}).get("peers", 0))


@pytest.mark.once
def test_ignore_file_pause_resume_and_modes_through_the_cli(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address)
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / ".csignore").write_text("# local scratch\n*.tmp\n")
    (pa / "song.mid").write_bytes(b"MThd first take")
    (pa / "scratch.tmp").write_bytes(b"not for peers")

    code = _share(a, pa)
    _attach(b, code, pb)
    wait_for(lambda: (pb / "song.mid").exists(), "B to receive A's file")
    assert not (pb / "scratch.tmp").exists() and not (pb / ".csignore").exists()

    # pause B's share: its link closes, nothing arrives, and it stays paused over a restart
    paused = json.loads(b.cli("pause", pb, "--json").stdout)
    assert paused == {"path": str(pb), "paused": True, "sync_mode": "send_receive"}
    assert b.share(pb)["status"] == "paused" and b.share(pb)["paused"]
    wait_for(lambda: _links(a, pa) == 0 and _links(b, pb) == 0, "the share's link to close")
    (pa / "while paused.mid").write_bytes(b"recorded during the pause")
    a.rescan_until_scanned(pa)
    b.restart()
    assert b.share(pb)["status"] == "paused"
    assert "paused" in b.cli("list").stdout
    assert _links(b, pb) == 0 and not (pb / "while paused.mid").exists()
    assert b.cli("resume", pb).stdout.strip() == f"resumed {pb}"
    wait_for(lambda: (pb / "while paused.mid").exists(), "B to catch up after resuming")
    assert not b.share(pb)["paused"]

    # receive-only on B: A's changes come in, B's stay on B and are listed
    assert b.cli("mode", pb, "receive-only").stdout.strip() == f"{pb}: receive-only"
    (pb / "b edit.mid").write_bytes(b"made on B")
    b.rescan_until_scanned(pb)
    (pa / "song.mid").write_bytes(b"MThd second take")
    a.rescan_until_scanned(pa)
    wait_for(lambda: (pb / "song.mid").read_bytes() == b"MThd second take",
             "A's edit to reach the receive-only B")
    assert b.share(pb)["not_sent"] == ["/b edit.mid"]
    assert "not sent (receive-only)" in b.cli("status").stdout
    assert not (pa / "b edit.mid").exists()
    # back to send-receive: what was kept back goes out
    b.cli("mode", pb, "send-receive")
    wait_for(lambda: (pa / "b edit.mid").exists(), "B's kept-back file to reach A")

    # send-only on A (set when sharing again): B's edits are recorded, not applied
    _share(a, pa, "--sync-mode", "send-only")
    assert json.loads(a.cli("mode", pa, "--json").stdout)["sync_mode"] == "send_only"
    (pb / "song.mid").write_bytes(b"MThd edited on B")
    b.rescan_until_scanned(pb)
    wait_for(lambda: "/song.mid" in (a.share(pa) or {}).get("out_of_sync", []),
             "B's edit to be listed out of sync on A")
    assert (pa / "song.mid").read_bytes() == b"MThd second take"
    assert "not applied here (send-only)" in a.cli("status").stdout
    # override: A's version goes out over B's edit
    assert "1 file(s)" in a.cli("override", pa).stdout
    wait_for(lambda: (pb / "song.mid").read_bytes() == b"MThd second take",
             "A's version to replace B's edit")
    (pb / "song.mid").write_bytes(b"MThd edited on B again")
    b.rescan_until_scanned(pb)
    wait_for(lambda: "/song.mid" in (a.share(pa) or {}).get("out_of_sync", []),
             "B's new edit to be listed out of sync on A")
    a.cli("mode", pa, "send-receive")
    wait_for(lambda: (pa / "song.mid").read_bytes() == b"MThd edited on B again",
             "B's edit to come in once A receives again")

    # the ignore file changed: *.tmp is no longer ignored, so A's file goes out
    (pa / ".csignore").write_text("# nothing ignored now\n")
    a.rescan_until_scanned(pa)
    wait_for(lambda: (pb / "scratch.tmp").exists(), "the un-ignored file to reach B")

    # a third device joins receive-only, merging a folder that holds a file of its own:
    # the mode is in force from its first scan, so that file is never sent
    c = procs.daemon("c", "--peer", a.address)
    pc = procs.root / "C"
    pc.mkdir()
    (pc / "c own.mid").write_bytes(b"stays on C")
    joined = json.loads(c.cli("attach", _share(a, pa), pc, "--merge", "--sync-mode",
                              "receive-only", "--json", "--timeout", "60").stdout)
    assert joined["sync_mode"] == "receive_only"
    wait_for(lambda: (pc / "song.mid").exists(), "C to receive A's files")
    wait_for(lambda: (c.share(pc) or {}).get("not_sent") == ["/c own.mid"],
             "C's own file to be listed as not sent")
    assert not (pa / "c own.mid").exists()
    # revert: C's own file goes (archived, so nothing is lost)
    assert "reverted 1 local change(s)" in c.cli("revert", pc).stdout
    wait_for(lambda: not (pc / "c own.mid").exists(), "C's local addition to be reverted")
    versions = json.loads(c.cli("versions", pc / "c own.mid", "--json").stdout)
    assert len(versions["versions"]) == 1

    bad = b.cli("mode", pb, "sideways", check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    missing = b.cli("pause", procs.root / "nowhere", check=False)
    assert missing.returncode == 2 and "no_such_share" in missing.stderr


def test_an_attach_keeps_its_sync_mode_across_a_restart(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    data.create()
    attach = PendingAttach("SYNC" + "A" * 29, "ab" * 32, "/m", "cd" * 16, 1.0, "send_only")
    data.save_shares([], [attach])
    assert data.load_shares() == ([], [attach])
    with pytest.raises(DataDirError, match="sync mode"):
        PendingAttach("SYNC" + "A" * 29, "ab" * 32, "/m", "cd" * 16, 1.0, "sideways")


def test_control_commands_for_share_controls_are_checked() -> None:
    request = parse_request(b'{"type":"set_share_mode","path":"/m","mode":"send-only"}')
    assert request.args == {"path": "/m", "mode": ShareMode.SEND_ONLY}
    assert parse_request(b'{"type":"pause","path":"/m"}').args == {"path": "/m"}
    assert parse_request(b'{"type":"resume"}').args == {}
    assert parse_request(b'{"type":"create_share","path":"/m","sync_mode":"receive_only"}'
                         ).args["sync_mode"] is ShareMode.RECEIVE_ONLY
    with pytest.raises(ControlRequestError) as bad:
        parse_request(b'{"type":"set_share_mode","path":"/m","mode":"both"}')
    assert bad.value.code == "invalid_argument" and "send_receive" in str(bad.value)
    with pytest.raises(ControlRequestError):
        parse_request(b'{"type":"pause","path":"relative"}')
