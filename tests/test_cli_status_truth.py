"""``csembed status`` tells the truth, with file names (issue 13.1), and the ``status``
reply stays small for old clients while ``status_detail`` carries the rest (13.8).

Two real daemons on loopback, driven through the CLI: A (desktop board) and B
(a board with a 300 kB quota). A shares a folder holding a symbolic link and
a 200 kB take, then adds a second one B has no room for. Then a conflicting edit made on
both sides while B is paused, and an edit on a read-only share that is put back.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    board_with_quota,
    code_of,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

QUOTA = 300_000



@pytest.mark.once
def test_status_names_problems_and_says_synced_only_when_it_is(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address, board=str(board_with_quota(procs.root, QUOTA)))
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "take1.wav").write_bytes(os.urandom(200_000))
    (pa / "notes.txt").write_text("first\n")
    os.symlink("/etc/hostname", pa / "outside")
    code = code_of(a.cli("share", pa, "--json").stdout)
    a.rescan_until_scanned(pa)

    # Nobody has A's files yet: not "synced".
    def waiting() -> str | None:
        text = a.cli("status").stdout
        return text if f"share {pa}: waiting" in text else None

    text = wait_for(waiting, "A to say it waits for a peer")
    assert "0 peers reachable" in text, text
    assert "skipped: symbolic link: /outside" in text, text

    b.cli("attach", code, pb)
    wait_for(lambda: (pb / "take1.wav").exists() and (pb / "notes.txt").exists(),
             "the first take")
    # The second take would take B over its quota (added once the first landed, so
    # that the check does not depend on how concurrent downloads reserve space).
    (pa / "take2.wav").write_bytes(os.urandom(200_000))
    a.rescan_until_scanned(pa)

    def quota_held() -> dict | None:
        share = b.share(pb)
        held = share and [p for p in share.get("problems", []) if p["kind"] == "quota"]
        return share if held else None

    share = wait_for(quota_held, "B to hold back one take for its quota")
    assert share["status"] == "waiting"
    assert "1 file held back: quota" in share["missing"]
    text = b.cli("status").stdout
    assert "1 file held back: quota" in text, text
    assert "held back: quota: /take2.wav" in text, text
    assert not (pb / "take2.wav").exists()
    assert "1 problem(s)" in b.cli("list").stdout

    # A holds everything and has reached B since its last change.
    wait_for(lambda: (a.share(pa) or {}).get("status") == "synced", "A to say synced")
    assert f"share {pa}: synced, 1 peer(s) connected" in a.cli("status").stdout

    # A conflict: both sides edit notes.txt while B is paused.
    assert b.cli("pause").stdout.strip() == "paused"
    wait_for(lambda: (a.share(pa) or {}).get("peers") == 0, "the link to close")
    (pa / "notes.txt").write_text("edited on A\n")
    a.rescan_until_scanned(pa)
    (pb / "notes.txt").write_text("edited on B, longer\n")
    b.rescan_until_scanned(pb)
    b.cli("resume")

    def conflict_line() -> str | None:
        for daemon in (a, b):
            text = daemon.cli("status").stdout
            line = next((ln for ln in text.splitlines()
                         if "conflict: /notes.txt" in ln), None)
            if line:
                return line
        return None

    line = wait_for(conflict_line, "a conflict on notes.txt to be reported")
    assert "CONFLICT" in line, line

    # An edit on a read-only share is put back, and said so.
    pr, br = procs.root / "RO", procs.root / "BRO"
    pr.mkdir()
    (pr / "score.mid").write_bytes(b"MThd" + bytes(100))
    ro_code = code_of(a.cli("share", pr, "--mode", "read-only", "--json").stdout)
    b.cli("attach", ro_code, br)
    wait_for(lambda: (br / "score.mid").exists(), "the read-only share to arrive")
    (br / "score.mid").write_bytes(b"MThd changed here")
    b.rescan_until_scanned(br)

    seen = [""]

    def reverted() -> str | None:
        seen[0] = b.cli("status").stdout
        return seen[0] if "reverted (read-only share): /score.mid" in seen[0] else None

    try:
        wait_for(reverted, "B to report the reverted edit", timeout=30)
    except AssertionError:
        raise AssertionError(seen[0]) from None

    # 13.8: the draft's status reply fits in one 1 KiB read; the detail has its own command.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(b.data / "control"))
        handshake = b""
        while not handshake.endswith(b"\n"):
            handshake += sock.recv(1)
        sock.sendall(b'{"type": "status"}\n')
        block = sock.recv(1024)
    assert block.endswith(b"\n") and len(block) < 1024, block
    reply = json.loads(block)
    assert {"paused", "tracking", "nat_punctured", "upload_rate", "download_rate"} <= set(reply)
    assert reply["shares"] == 2 and reply["problems"] >= 2
    detail = b.call("status_detail")
    assert detail["board"]["name"] == "small-disk"
    assert {s["path"] for s in detail["shares"]} == {str(pb), str(br)}
