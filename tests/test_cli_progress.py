"""``csembed transfers --watch`` shows progress (issue 13.4): on a terminal one line per
transfer rewritten in place (bar, percentage, rate, ETA); plain lines otherwise;
the sending side shows each file it sends, to which device, how far, how fast.

A sends one 1.5 MB take to B ("laptop") at 300 kB/s (its upload limit), so
the transfer takes a few seconds; two watchers run on B meanwhile, one on a
pseudo-terminal, and one on A; A's ``status`` and ``status_detail`` are
asked while the take is half sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    code_of,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)


@pytest.mark.once
def test_transfer_progress_on_a_terminal_and_in_plain_lines(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address)
    a.cli("config", "upload_limit", "300 kB/s")
    b.cli("config", "device_name", "laptop")
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "take.wav").write_bytes(os.urandom(1_500_000))
    code = code_of(a.cli("share", pa, "--json").stdout)

    watch = [sys.executable, "-m", "csembed", "transfers", "--watch", "--until-idle",
             "--interval", "0.2", "--data-dir", str(b.data)]
    plain = subprocess.Popen(watch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender = subprocess.Popen(watch[:-2] + ["--data-dir", str(a.data)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    master, slave = os.openpty()
    tty = subprocess.Popen(watch, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    screen = bytearray()

    def read_tty() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.extend(data)

    reader = threading.Thread(target=read_tty, daemon=True)
    reader.start()
    try:
        b.cli("attach", code, pb)

        def sending() -> dict | None:
            uploads = (a.share(pa) or {}).get("uploads") or []
            return next((u for u in uploads if 0 < u["done"] < u["total"]), None)
        upload = wait_for(sending, "A to list the take it sends")
        assert upload["key"] == "/take.wav" and upload["total"] == 1_500_000
        assert upload["peer_name"] == "laptop" and upload["direction"] == "up"
        assert len(json.dumps(a.call("status"))) < 1024  # plain status stays small
        shown = a.cli("status").stdout
        assert any(ln.strip().startswith("↑ [") and ln.endswith("/take.wav → laptop")
                   for ln in shown.splitlines()), shown
        listed = a.cli("transfers").stdout
        assert listed.startswith("↑ [") and f"{pa}/take.wav → laptop" in listed, listed
        out, err = plain.communicate(timeout=120)
        assert tty.wait(120) == 0, tty.stderr.read() if tty.stderr else ""
        sender.terminate()
        sent, _ = sender.communicate(timeout=60)
    finally:
        for proc in (plain, tty, sender):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    reader.join(10)
    os.close(master)
    assert plain.returncode == 0, err
    lines = out.splitlines()
    moving = [ln for ln in lines if ln.startswith("↓ [") and f"{pb}/take.wav" in ln]
    assert len(moving) >= 2, out  # a line when it starts and at each tenth done
    assert any("ETA" in ln and "/s" in ln for ln in moving), out
    assert lines[-1] == "all transfers done", out
    assert "\x1b[" not in out  # no terminal control codes in a pipe

    text = screen.decode("utf-8", "replace")
    assert "\x1b[2K↓ [" in text, text[-2000:]  # lines cleared and rewritten in place
    assert "\x1b[1F" in text or "\x1b[2F" in text, text[-2000:]
    assert "all transfers done" in text
    assert (pb / "take.wav").stat().st_size == 1_500_000
    # The sending side sees each file it sends, with its peer, rate and ETA.
    up = [ln for ln in sent.splitlines() if ln.startswith("↑ [")
          and ln.endswith(f"{pa}/take.wav → laptop")]
    assert len(up) >= 2, sent  # a line when it starts and at each tenth sent
    assert any("ETA" in ln and "/s" in ln for ln in up), sent
    assert "\x1b[" not in sent
