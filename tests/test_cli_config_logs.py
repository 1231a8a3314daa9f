"""Config and logs from the CLI (issue 13.7, 13.10, 10.13): the data directory from
``$CSEMBED_DATA_DIR``, settings with units and where each value comes from,
clear errors for bad values (no tracebacks), a log file with one plain line per
event and repeats collapsed, and systemd units whose command lines are ours."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Proc,
    Procs,
    cli,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

from csembed.cli import build_parser
from csembed.cli_commands.daemon_log import CollapsingHandler

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                  r"[\w.]+: \S")


@pytest.mark.once
def test_data_dir_from_the_environment_units_sources_and_clear_errors(
        procs: Procs, monkeypatch: pytest.MonkeyPatch) -> None:
    data = procs.root / "env-data"
    log_file = procs.root / "logs" / "daemon.log"
    monkeypatch.setenv("CSEMBED_DATA_DIR", str(data))
    daemon = Proc(["daemon", "--listen", "127.0.0.1:0", "--no-lan", "--board", "wifi-piano",
                   "--peer", "127.0.0.1:1", "--log-file", str(log_file)],
                  procs.root / "env.log")
    procs.started.append(daemon)
    assert daemon.first_line().startswith("csembed daemon ready")
    assert (data / "control").exists()

    # No --data-dir anywhere: the CLI finds the daemon through the same variable.
    assert cli("config", "upload_limit", "1 MB/s").stdout.strip() == "upload_limit = 1000000"
    assert cli("config", "download_limit", "500KB").stdout.strip() == "download_limit = 500000"
    assert cli("config", "scan_interval", "5 min").stdout.strip() == "scan_interval = 300.0"
    shown = cli("config").stdout
    assert "upload_limit       = 1000000 (1 MB/s)  (stored setting)" in shown, shown
    assert "download_limit     = 500000 (500 kB/s)  (stored setting)" in shown, shown
    assert f"data_dir           = {data}  (environment (CSEMBED_DATA_DIR))" in shown, shown
    assert "quota              = 1073741824  (board wifi-piano)" in shown, shown
    assert "lan_broadcast      = false  (command line (--no-lan))" in shown, shown
    assert cli("config", "upload_limit", "null").stdout.strip() == "upload_limit = null"
    assert "upload_limit       = 1000000 (1 MB/s)  (board wifi-piano)" in cli("config").stdout

    for args, expected in (
            (("config", "upload_limit", "fast"), "must be a rate such as '500 kB/s'"),
            (("config", "scan_interval", "soon"), "must be a duration such as '90 s'"),
            (("config", "colour", "blue"), "no configuration key 'colour'"),
            (("share", str(procs.root), "--expires", "banana"),
             "--expires 'banana': expected a duration such as 30min, 24h or 7d"),
            (("share", str(procs.root), "--expires=-5h"), "expected a duration")):
        got = cli(*args, check=False)
        assert got.returncode == 2, (args, got)
        assert expected in got.stderr, (args, got.stderr)
        assert "Traceback" not in got.stderr

    cli("stop")
    assert daemon.proc.wait(30) == 0
    bad_log = cli("daemon", "--listen", "127.0.0.1:0", "--no-lan", "--log-file",
                  "/proc/no/such/dir/daemon.log", check=False)
    assert bad_log.returncode == 2 and "--log-file /proc/no/such/dir/daemon.log" in \
        bad_log.stderr and "Traceback" not in bad_log.stderr, bad_log.stderr
    lines = log_file.read_text().splitlines()
    assert any("started: board wifi-piano" in line for line in lines), lines
    assert any("stopped" in line for line in lines)
    for line in lines:
        assert LINE.match(line), line
        assert "Traceback" not in line and "Error(" not in line, line


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_repeated_failures_are_collapsed_and_reprs_are_plain() -> None:
    now = [0.0]
    keep = _Keep()
    handler = CollapsingHandler([keep], clock=lambda: now[0], window=60.0, burst=3)
    log = logging.getLogger("csembed.test.collapse")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for port in range(15):
            log.warning("authentication failed for %s:%d", "10.0.0.5", 40000 + port)
            log.info("peer %s connected", "ab" if port == 0 else "cd")
            now[0] += 2.0
        log.info("connection %s failed: %r", "10.0.0.6", ConnectionResetError(104, "reset"))
        now[0] = 61.0
        log.info("later")
    finally:
        log.removeHandler(handler)
        handler.close()
    failures = [ln for ln in keep.lines if ln.startswith("authentication failed")]
    assert failures[:3] == [f"authentication failed for 10.0.0.5:{40000 + p}" for p in range(3)]
    assert failures[3:] == ["authentication failed for 10.0.0.5:40014 ×12 more in 60 s"]
    # different messages are not folded together
    assert [ln for ln in keep.lines if ln.startswith("peer")] == \
        ["peer ab connected", "peer cd connected", "peer cd connected", "peer cd connected",
         "peer cd connected ×11 more in 60 s"]
    assert "connection 10.0.0.6 failed: ConnectionResetError: [Errno 104] reset" in keep.lines
    assert "later" in keep.lines  # the "cd" window ends later: summed up at close


def _exec_start(unit: Path, home: str) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    env = dict(re.findall(r"^Environment=(\w+)=(\S+)$", text, re.M))
    command = re.search(r"^ExecStart=(.*)$", text, re.M)
    assert command is not None
    line = command.group(1).replace("%h", home).replace("%i", "pi")
    for key, value in env.items():
        line = line.replace("${" + key + "}", value.replace("%h", home))
    return shlex.split(line)


@pytest.mark.parametrize(("name", "installed"), [("csembed.service", "csembed@pi.service"),
                                                 ("csembed-user.service", "csembed.service")])
def test_systemd_units_run_a_command_line_we_accept(name: str, installed: str,
                                                    tmp_path: Path) -> None:
    unit = Path(__file__).resolve().parent.parent / "tools" / "systemd" / name
    argv = _exec_start(unit, "/home/pi")
    assert argv[0].endswith("/bin/csembed") and argv[1] == "daemon"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "daemon"
    if name == "csembed-user.service":
        text = unit.read_text()
        assert "systemctl --user enable --now csembed" in text
        assert "sudo" not in text and "User=" not in text
        assert args.log_file is not None and str(args.log_file).startswith("/home/pi/")
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        # Syntax only (the ExecStart binary is not installed here), under the name the
        # instructions install it as.
        copy = tmp_path / installed
        shutil.copy(unit, copy)
        got = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "err"})
        problems = [ln for ln in got.stderr.splitlines()
                    if "Unknown" in ln or "Invalid" in ln or "Failed to parse" in ln]
        assert not problems, got.stderr
