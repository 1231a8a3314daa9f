"""The daemon's CLI commands as a user types them: text and ``--json`` output,
the no-daemon message, board limits in ``status``, and ``cat`` streaming a
file this device does not hold (it is over its board's file-size limit)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    cli,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)

from csembed.board_profile import boards_dir


def test_commands_without_a_daemon_say_how_to_start_one(tmp_path: Path) -> None:
    for command in (["list"], ["status"], ["share", str(tmp_path)], ["stop"]):
        result = cli(*command, "--data-dir", tmp_path / "nowhere", check=False)
        assert result.returncode == 2
        assert "no csembed daemon is running (no control socket at " in result.stderr
        assert f"{tmp_path / 'nowhere' / 'control'}" in result.stderr
        assert "start one with `csembed daemon`" in result.stderr


def _small_board(root: Path) -> Path:
    """The desktop profile, but refusing files over 64 KiB."""
    text = (boards_dir() / "desktop.toml").read_text()
    lines = [('max_file_size = "64 KiB"' if line.startswith("max_file_size") else line)
             for line in text.splitlines()]
    path = root / "tiny.toml"
    path.write_text("\n".join(lines).replace('name = "desktop"', 'name = "tiny"') + "\n")
    return path


def test_cli_output_board_limits_and_cat_streaming_from_a_peer(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", "127.0.0.1:1", board=str(_small_board(procs.root)))
    b.cli("config", "peers", json.dumps([a.address]))
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    big = os.urandom(300_000)
    (pa / "big.wav").write_bytes(big)
    (pa / "small.mid").write_bytes(b"MThd" + os.urandom(1000))

    shared = a.cli("share", pa, "--multi-use", "--expires", "2h").stdout
    assert f"now sharing {pa}" in shared
    assert "usable any number of times, expires in 2 h" in shared
    code = shared.splitlines()[2].strip()
    assert shared.splitlines()[3].strip() == f"clearskies://directory/{code}"
    attached = b.cli("attach", code, pb).stdout
    assert f"joined: {pb} (read-write)" in attached

    wait_for(lambda: (pb / "small.mid").exists(), "the small file")

    def limited() -> list:
        share = b.share(pb)
        return share.get("limits") if share else []

    limits = wait_for(limited, "B to refuse the big file by its board limit")
    assert limits[0]["key"] == "/big.wav"
    assert not (pb / "big.wav").exists()
    text = b.cli("status").stdout
    assert "board tiny:" in text and "max file 64 KiB" in text
    assert "held back: over the size limit: /big.wav" in text, text
    assert "1 file held back: over the size limit" in text, text
    status = json.loads(b.cli("status", "--json").stdout)
    assert status["board"]["max_file_size"] == 64 * 1024

    # cat streams the file from A, by ranges, without B storing it
    import subprocess
    import sys
    streamed = subprocess.run([sys.executable, "-m", "csembed", "cat", str(pb), "big.wav",
                               "--data-dir", str(b.data)], capture_output=True, timeout=120)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == big
    assert not (pb / "big.wav").exists()
    missing = b.cli("cat", pb, "no such.wav", check=False)
    assert missing.returncode == 2 and "no such.wav" in missing.stderr

    listing = b.cli("list").stdout
    assert "read-write" in listing and str(pb) in listing
    assert json.loads(b.cli("list", "--json").stdout)["shares"][0]["path"] == str(pb)
    assert "connected" in a.cli("peers").stdout
    assert json.loads(a.cli("peers", "--json").stdout)["peers"][0]["share"] == str(pa)
    assert a.cli("transfers").stdout.strip() == "no transfers in progress"
    assert b.cli("config", "upload_limit", "2000000").stdout.strip() == "upload_limit = 2000000"
    assert b.cli("config", "upload_limit").stdout.strip() == "2000000"
    assert "upload_limit       = 2000000 (2 MB/s)  (stored setting)" in b.cli("config").stdout
    bad = b.cli("config", "no_such_thing", "1", check=False)
    assert bad.returncode == 2 and "no_such_key" in bad.stderr
    assert b.cli("pause").stdout.strip() == "paused"
    assert json.loads(b.cli("status", "--json").stdout)["paused"] is True
    assert b.share(pb)["status"] == "paused"
    assert b.cli("resume").stdout.strip() == "resumed"
    assert f"stopped syncing {pb}" in b.cli("detach", pb).stdout
    assert (pb / "small.mid").exists()
    assert "no shares" in b.cli("list").stdout
    assert "stopping" in b.cli("stop").stdout
    assert b.proc.wait(30) == 0
