"""The command line as a user runs it: a real subprocess of ``python -m csembed``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def csembed(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "csembed", *args], capture_output=True,
                          text=True, timeout=120, check=check)


def test_help_lists_the_commands() -> None:
    out = csembed("--help").stdout
    for command in ("demo", "boards", "code"):
        assert command in out


def test_no_command_prints_help_and_fails() -> None:
    result = csembed(check=False)
    assert result.returncode == 2
    assert "usage:" in result.stdout


def test_boards_table_and_json() -> None:
    table = csembed("boards").stdout
    for name in ("desktop", "rpi-zero-2w", "rpi-4", "wifi-piano"):
        assert name in table
    piano = json.loads(csembed("boards", "wifi-piano", "--json").stdout)
    assert piano["storage"]["quota"] == 1024**3


def test_unknown_board_is_a_clear_error() -> None:
    result = csembed("boards", "toaster", check=False)
    assert result.returncode == 2
    assert "no board named 'toaster'" in result.stderr
    assert "Traceback" not in result.stderr


def test_code_new_then_check_round_trips() -> None:
    made = json.loads(csembed("code", "new", "--json").stdout)
    assert made["code"].startswith("SYNC") and len(made["code"]) == 33
    typed = made["code"].lower().replace("o", "0")
    checked = json.loads(csembed("code", "check", typed, "--json").stdout)
    assert checked == made


@pytest.mark.parametrize("text", ["SYNCNOTACODE", "hello"])
def test_code_check_rejects_garbage(text: str) -> None:
    result = csembed("code", "check", text, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("csembed: ")


def test_demo_runs_and_verifies_what_it_shows() -> None:
    # the demo is an end-to-end test of its own: tracker + two daemons, share, attach, edits
    result = csembed("demo", check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "access code (read-write, usable once" in out
    assert "piano and laptop hold the same 6 files: yes" in out
    assert out.rstrip().splitlines()[-1].startswith("done in ")
