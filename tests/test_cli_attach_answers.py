"""``csembed attach`` gives a definite answer (issue 13.2), through the real CLI.

A shares; B dials A (``--peer``); C dials an address where nothing listens.
Each case prints what happened and exits non-zero, and none says "cancelled"
unless the attach was cancelled.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Daemon,
    Procs,
    code_of,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

from csembed.access_code import AccessCode


def _attach_on_a_terminal(daemon: Daemon, code: str, path: Path, answer: str) -> str:
    """Run ``csembed attach`` with a pseudo-terminal as stdin and stdout; answer its
    question; return what it wrote."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "csembed", "attach", code, str(path),
                             "--data-dir", str(daemon.data)],
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    seen = bytearray()
    try:
        answered = False
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"attach wrote nothing for 60 s: {seen.decode(errors='replace')}"
            try:
                data = os.read(master, 4096)
            except OSError:  # the other end closed: the command ended
                break
            if not data:
                break
            seen.extend(data)
            if not answered and b"[y/N]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        assert proc.wait(60) == 0, seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return seen.decode(errors="replace")


REFUSED = "refused the code: it has expired, was already used or revoked, or was never " \
          "issued there"


@pytest.mark.once
def test_attach_answers_expired_used_unknown_member_unreachable_and_cancel(
        procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address)
    pa = procs.root / "A"
    pa.mkdir()
    (pa / "take.mid").write_bytes(b"MThd" + bytes(64))

    # Expired: wait until A's own listing says so, then try it.
    short = code_of(a.cli("share", pa, "--expires", "1s", "--json").stdout)
    wait_for(lambda: "expired" in a.cli("codes").stdout, "the code to expire")
    got = b.cli("attach", short, procs.root / "B-expired", check=False)
    assert got.returncode == 1, got
    assert f"attach failed: {a.address} {REFUSED}" in got.stdout, got.stdout
    assert "gave up (nothing was attached)" in got.stdout
    assert "cancelled" not in got.stdout
    assert "no shares" in b.cli("list").stdout

    # Used once already.
    once = code_of(a.cli("share", pa, "--json").stdout)
    joined = b.cli("attach", once, procs.root / "B1")
    assert f"joined: {procs.root / 'B1'} (read-write)" in joined.stdout
    again = b.cli("attach", once, procs.root / "B2", check=False)
    assert again.returncode == 1 and REFUSED in again.stdout, again.stdout
    assert "Traceback" not in again.stderr

    # Never issued.
    unknown = b.cli("attach", AccessCode.generate().text, procs.root / "B3", check=False)
    assert unknown.returncode == 1 and REFUSED in unknown.stdout, unknown.stdout

    # Already a member: the keys arrive, and turn out to be those of a share B runs.
    multi = code_of(a.cli("share", pa, "--multi-use", "--json").stdout)
    member = b.cli("attach", multi, procs.root / "B4", check=False)
    assert member.returncode == 1, member
    assert ("attach failed: this device is already a member of that share (at "
            f"{procs.root / 'B1'}); nothing was attached") in member.stdout, member.stdout
    listing = b.cli("list").stdout
    assert "attach_failed" in listing and "already a member" in listing
    assert f"cancelled the attach of {procs.root / 'B4'}" in \
        b.cli("attach", "--cancel", procs.root / "B4").stdout
    assert str(procs.root / "B4") not in b.cli("list").stdout

    # A folder that already holds files: refused without --merge, saying what a merge does.
    pm, bm = procs.root / "M", procs.root / "BM"
    pm.mkdir()
    (pm / "from-a.txt").write_text("a")
    bm.mkdir()
    (bm / "mine.txt").write_text("b")
    merge_code = code_of(a.cli("share", pm, "--json").stdout)
    refused = b.cli("attach", merge_code, bm, check=False)
    assert refused.returncode == 2, refused
    assert "already holds 1 file(s)" in refused.stderr and "--merge" in refused.stderr
    assert "they stay" in refused.stderr
    assert b.share(bm) is None
    assert "joined" in b.cli("attach", merge_code, bm, "--merge").stdout
    wait_for(lambda: (pm / "mine.txt").exists() and (bm / "from-a.txt").exists(),
             "the merged folders to meet")

    # On a terminal it asks instead.
    pq, bq = procs.root / "Q", procs.root / "BQ"
    pq.mkdir()
    bq.mkdir()
    (bq / "already-here.txt").write_text("c")
    asked = _attach_on_a_terminal(b, code_of(a.cli("share", pq, "--json").stdout), bq, "y")
    assert "Merge? [y/N]" in asked and "joined" in asked, asked
    wait_for(lambda: (pq / "already-here.txt").exists(), "the merged file to reach A")

    # Not reachable: says so, keeps waiting, and can be cancelled from elsewhere.
    c = procs.daemon("c", "--peer", "127.0.0.1:1")
    late = code_of(a.cli("share", pa, "--json").stdout)
    waiting = c.cli("attach", late, procs.root / "C1", "--timeout", "3", check=False)
    assert waiting.returncode == 1, waiting
    assert "the sharer is not reachable yet (no answer at 127.0.0.1:1); still trying" \
        in waiting.stdout, waiting.stdout
    assert "the daemon keeps trying" in waiting.stdout
    assert "attaching" in c.cli("list").stdout

    background = subprocess.Popen(
        [sys.executable, "-m", "csembed", "attach", AccessCode.generate().text,
         str(procs.root / "C2"), "--data-dir", str(c.data), "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: c.share(procs.root / "C2"), "the second attach to start")
        assert "cancelled the attach" in c.cli("detach", procs.root / "C2").stdout
        out, err = background.communicate(timeout=60)
    finally:
        if background.poll() is None:
            background.kill()
            background.communicate()
    assert background.returncode == 1, (out, err)
    assert f"the attach of {procs.root / 'C2'} was cancelled" in out, out
    c.cli("attach", "--cancel", procs.root / "C1")
    nowait = c.cli("attach", AccessCode.generate().text, procs.root / "C3", "--timeout", "0")
    assert "the daemon keeps looking" in nowait.stdout and "cancelled" not in nowait.stdout
    assert c.share(procs.root / "C3")["status"] == "attaching"
    c.cli("detach", procs.root / "C3")
    assert "no shares" in c.cli("list").stdout
    # No tracker, no LAN, no --peer: nobody to ask yet.
    d = procs.daemon("d")
    alone = d.cli("attach", late, procs.root / "D1", "--timeout", "1", check=False)
    assert alone.returncode == 1
    assert "the sharer is not reachable yet: no peer found under this code (tracker, LAN or " \
        "--peer); still looking" in alone.stdout, alone.stdout
    none = c.cli("attach", "--cancel", procs.root / "C1", check=False)
    assert none.returncode == 2 and "no attach is waiting at" in none.stderr
