"""Shared set-up for the daemon and end-to-end tests (no tests of its own).

Daemons and trackers run as real subprocesses (``python -m csembed ...``) on
loopback; the tests drive them through the CLI, and wait for conditions by
polling the control socket or the files on disk (:func:`wait_for`), never by
sleeping a guessed time. Data directories live under a short ``/tmp`` path
because a UNIX socket path is limited to 107 bytes. Test modules import the
fixtures ``procs_fixture`` and ``short_tmp_fixture`` (named ``procs`` and
``short_tmp``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from csembed.board_profile import boards_dir
from csembed.cli_commands.control_client import ControlClient

TIMEOUT = 60.0  # generous: only guards against a hang


def cli(*args: str | Path, check: bool = True, timeout: float = 120.0,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``csembed ARGS`` in a subprocess."""
    result = subprocess.run([sys.executable, "-m", "csembed", *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"csembed {' '.join(map(str, args))} failed "
                             f"({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT,
             interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _read_line(stream: Any, timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box:
        raise AssertionError(f"no line within {timeout:g} s")
    return box[0]


class Proc:
    """A csembed subprocess whose stderr goes to a log file."""

    def __init__(self, args: list[str], log: Path, prefix: list[str] | None = None) -> None:
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "csembed", *args],
                                     stdout=subprocess.PIPE, stderr=self._log_file, text=True)

    def first_line(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout, timeout)
        if not line:
            self.proc.wait(5)
            raise AssertionError(f"process exited ({self.proc.returncode}) before it was "
                                 f"ready:\n{self.log.read_text()}")
        return line.strip()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


class Tracker(Proc):
    def __init__(self, root: Path) -> None:
        super().__init__(["tracker", "--listen", "127.0.0.1:0"], root / "tracker.log")
        line = self.first_line()
        self.address = line.rsplit(" ", 1)[1]


class Daemon(Proc):
    """``csembed daemon`` on loopback with its own data directory."""

    def __init__(self, root: Path, name: str, *extra: str, board: str = "desktop",
                 listen: str = "127.0.0.1:0", prefix: list[str] | None = None) -> None:
        self.name = name
        self.root = root
        self.data = root / f"{name}-data"
        self.extra = list(extra)
        self.board = board
        self.listen_arg = listen
        self.prefix = prefix
        self._start()

    def _start(self) -> None:
        args = ["daemon", "--data-dir", str(self.data), "--board", self.board,
                "--listen", self.listen_arg, *self.extra]
        if "--lan-address" not in self.extra:
            args.append("--no-lan")
        super().__init__(args, self.root / f"{self.name}.log", self.prefix)
        line = self.first_line()
        assert line.startswith("csembed daemon ready: listening on "), line
        self.ready_line = line
        self.address = line.split("listening on ", 1)[1].split(",", 1)[0]
        self.port = int(self.address.rsplit(":", 1)[1])

    def restart(self) -> None:
        """Stop (SIGTERM) and start again with the same data directory and options."""
        assert self.stop() == 0, self.log.read_text()
        self._start()

    def cli(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--data-dir", self.data, check=check)

    def call(self, command: str, **params: Any) -> dict[str, Any]:
        with ControlClient(self.data / "control", timeout=30) as client:
            return client.call(command, **params)

    def status(self) -> dict[str, Any]:
        return self.call("status_detail")

    def share(self, path: Path) -> dict[str, Any] | None:
        for share in self.call("list_shares")["shares"]:
            if share["path"] == str(path):
                return share
        return None

    def rescan_until_scanned(self, path: Path) -> None:
        """Ask for a rescan and wait until one more scan pass has completed."""
        before = (self.share(path) or {}).get("scans", 0)
        self.cli("rescan", path)
        wait_for(lambda: (self.share(path) or {}).get("scans", 0) > before,
                 f"{self.name} to rescan {path}")


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (folders as 'dir').

    Downloads in progress (``*.!clearsky``) count as 'partial'; a file that
    vanishes while being read (renamed by the daemon) as 'vanished', so a
    tree taken mid-change never equals a settled one.
    """
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in dirnames:
            out[str((base / d).relative_to(root))] = "dir"
        for f in filenames:
            path = base / f
            name = str(path.relative_to(root))
            if f.endswith(".!clearsky"):
                out[name] = "partial"
                continue
            try:
                out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                out[name] = "vanished"
    return out


def code_of(share_output: str) -> str:
    """The access code from ``csembed share --json`` output."""
    return json.loads(share_output)["access_code"]


def board_with_quota(root: Path, quota: int) -> Path:
    """A copy of the desktop board, named ``small-disk``, whose share quota is ``quota``."""
    text = (boards_dir() / "desktop.toml").read_text()
    lines = [(f'quota = "{quota}"' if line.startswith("quota") else line)
             for line in text.splitlines()]
    path = root / "small-disk.toml"
    path.write_text("\n".join(lines).replace('name = "desktop"', 'name = "small-disk"') + "\n")
    return path


@pytest.fixture(name="short_tmp")
def short_tmp_fixture() -> Iterator[Path]:
    """A short temporary directory (UNIX socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Procs:
    """Starts processes and always stops them (fixture helper)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Proc] = []

    def tracker(self) -> Tracker:
        tracker = Tracker(self.root)
        self.started.append(tracker)
        return tracker

    def daemon(self, name: str, *extra: str, **kwargs: Any) -> Daemon:
        daemon = Daemon(self.root, name, *extra, **kwargs)
        self.started.append(daemon)
        return daemon

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.log.read_text()[-6000:]}"
                         for p in self.started if p.log.exists())


@pytest.fixture(name="procs")
def procs_fixture(short_tmp: Path) -> Iterator[Procs]:
    """Daemons and trackers of one test, always stopped; their logs are printed
    (pytest shows them when the test fails)."""
    group = Procs(short_tmp)
    try:
        yield group
    finally:
        group.stop_all()
        print(group.logs())
