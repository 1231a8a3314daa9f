"""Benchmark: what each part of the daemon costs in resident memory, idle and syncing.

Usage::

    python tools/bench/memory.py [--board wifi-piano] [--settle 32] [--recording-mib 4]
                                 [--files 100]

(a) Parts. Each line is measured in a fresh interpreter (``VmRSS`` from /proc
after the imports), importing the parts cumulatively in the order the daemon
loads them, so a line's delta is what that part adds: the interpreter,
asyncio (with ``ssl`` blocked, as the daemon does), sqlite3, PyNaCl's
libsodium binding (``nacl._sodium``; csembed calls it directly), then our
modules layer by layer. A second table prices what the board's daemon does
not load, or drops once started, each on top of the whole daemon: hashlib
(OpenSSL's libcrypto), uTP and STUN, the web page, the other CLI
sub-commands, ``ctypes.util`` (shutil, tempfile, bz2, lzma), pyserial, the
tracker client, PyNaCl's Python wrappers, ctypes, the rsync engine with our C
extension (loaded on the first delta), argparse and tomllib (used at start,
then freed).

(b) Idle. A real ``csembed daemon --board BOARD`` holding a share of 100
(``--files``) small files: VmRSS once its first scan is done and one maintenance tick (30 s, when
freed heap goes back to the kernel) has passed.

(c) Syncing. That daemon shares two recordings and the 100 small files with a
``desktop`` daemon, which attaches with a code and fetches them all, then
adds a recording of its own that the board's daemon fetches: the board's peak
(VmHWM) over both directions, and its RSS once settled again.

The anchor of (b) and (c) is the floor every asyncio + SQLite daemon starts
from: a bare interpreter that has imported ``asyncio`` (ssl blocked) and
``sqlite3``; the ratio is ours over it. The board's goals (wifi-piano: idle
<= 24 MB, peak <= 36 MB) are printed beside. Figures depend on the Python
build; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import vm_status

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MiB = 1 << 20
GOALS = {"wifi-piano": (24.0, 36.0)}  # MB: idle, peak (issue 12, item 5)
NO_TLS = "import sys; sys.modules['ssl'] = None"

STEPS = [
    ("interpreter", ""),
    # as in the daemon (csembed.cli_commands.daemon.without_tls): no ssl
    ("asyncio (ssl blocked)", f"{NO_TLS}; import asyncio"),
    ("sqlite3", "import sqlite3"),
    ("PyNaCl's libsodium binding (nacl._sodium)", "import nacl._sodium"),
    ("protocol + security", "import csembed.protocol.core"),
    ("database", "import csembed.database.replica"),
    ("directory (scanner, store, engine)", "import csembed.directory.engine"),
    ("CLI + runtime + control (the daemon)",
     "import csembed.cli, csembed.cli_commands.daemon, csembed.runtime.daemon, "
     "csembed.runtime.control_handler, csembed.runtime.control_server"),
]
NOT_LOADED = [
    ("hashlib (OpenSSL libcrypto)", "import hashlib"),
    ("uTP + STUN (board: utp = false)", "import csembed.runtime.utp_endpoint"),
    ("web page (no --web)", "import csembed.runtime.web_server"),
    ("other CLI sub-commands", "import csembed.cli; csembed.cli.build_parser()"),
    ("ctypes.util (shutil, tempfile, bz2, lzma)", "import ctypes.util"),
    ("pyserial (no --control-serial)", "import csembed.runtime.control_serial"),
    ("tracker client (no tracker)", "import csembed.runtime.tracker_client"),
    ("PyNaCl's wrappers (nacl.bindings, .signing)", "import nacl.bindings, nacl.signing"),
    ("ctypes (libc goes through cffi's backend)", "import ctypes"),
    ("rsync engine + C extension (until a delta)", "import csembed.rsync"),
    ("argparse + tomllib (freed after start)", "import argparse, tomllib"),
]


def rss_after(code: str) -> int:
    probe = (f"{code}\nimport re\n"
             "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    return int(out.split()[-1]) * 1024


def cli(data: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "csembed", *args, "--data-dir", str(data)],
                          check=True, capture_output=True, text=True, cwd=ROOT).stdout


class Daemon:
    def __init__(self, base: Path, name: str, board: str, *extra: str) -> None:
        self.data = base / f"{name}-data"
        self.log = (base / f"{name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "csembed", "daemon", "--data-dir", str(self.data),
             "--board", board, "--listen", "127.0.0.1:0", "--no-lan", "--log-level",
             "warning", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"daemon {name} did not start; see {base / (name + '.log')}")
        self.address = line.split("listening on ", 1)[1].split(",", 1)[0]

    def share(self, path: Path) -> dict[str, Any]:
        from csembed.cli_commands.control_client import ControlClient
        with ControlClient(self.data / "control", timeout=60) as client:
            shares = client.call("list_shares")["shares"]
        return next((s for s in shares if s["path"] == str(path)), {})

    def rss(self) -> int:
        return vm_status(self.proc.pid)["VmRSS"]

    def peak(self) -> int:
        return vm_status(self.proc.pid)["VmHWM"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def wait(predicate: Any, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def _small_files(root: Path, count: int = 100) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"take{i:03d}.mid").write_bytes(os.urandom(2048 if count <= 100 else 512))


def _scanned(daemon: Daemon, path: Path) -> bool:
    share = daemon.share(path)
    return share.get("scans", 0) >= 1 and share.get("status") in ("synced", "waiting")


def _has(path: Path, sizes: dict[str, int]) -> bool:
    try:
        return all((path / name).stat().st_size == size for name, size in sizes.items())
    except FileNotFoundError:
        return False


def idle_daemon(base: Path, board: str, settle: float, files: int) -> tuple[int, int]:
    """(RSS after the first scan and a maintenance tick, RSS right after the scan)."""
    share = base / "idle-share"
    _small_files(share, files)
    piano = Daemon(base, "idle", board)
    try:
        cli(piano.data, "share", str(share), "--json")
        wait(lambda: _scanned(piano, share), "the first scan")
        after_scan = piano.rss()
        time.sleep(settle)  # not synchronisation: the idle figure is the one after a while
        return piano.rss(), after_scan
    finally:
        piano.stop()


def syncing_daemon(base: Path, board: str, recording: int, settle: float) -> dict[str, int]:
    """The board's peak and settled RSS over a sync in both directions (see (c))."""
    src = base / "piano-takes"
    _small_files(src)
    sizes = {f"take{i:03d}.mid": 2048 for i in range(100)}
    for i in range(2):
        (src / f"recital{i}.wav").write_bytes(os.urandom(recording))
        sizes[f"recital{i}.wav"] = recording
    piano = Daemon(base, "piano", board)
    laptop = Daemon(base, "laptop", "desktop", "--peer", piano.address)
    try:
        code = json.loads(cli(piano.data, "share", str(src), "--json"))["access_code"]
        wait(lambda: _scanned(piano, src), "the board's first scan")
        before = piano.rss()
        dst = base / "laptop-takes"
        cli(laptop.data, "attach", code, str(dst))
        wait(lambda: _has(dst, sizes), "the laptop to fetch every file")
        (dst / "lesson.wav").write_bytes(os.urandom(recording))
        cli(laptop.data, "rescan", str(dst))
        wait(lambda: _has(src, {"lesson.wav": recording}), "the board to fetch the lesson")
        peak = piano.peak()
        time.sleep(settle)
        return {"before": before, "peak": peak, "after": piano.rss()}
    finally:
        laptop.stop()
        piano.stop()


def _mb(value: int) -> str:
    return f"{value / 1e6:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="wifi-piano")
    parser.add_argument("--settle", type=float, default=32.0,
                        help="seconds idle before the idle figures (default %(default)s: "
                             "one maintenance tick)")
    parser.add_argument("--files", type=int, default=100,
                        help="small files in the idle share of (b) (default %(default)s)")
    parser.add_argument("--recording-mib", type=float, default=4.0,
                        help="size of each recording synced in (c) (default %(default)s)")
    args = parser.parse_args()
    print(f"(a) resident memory by part (fresh interpreter each, imports cumulative); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  {'part':<44} {'adds MB':>8} {'total MB':>9}")
    code, previous = "", 0
    for label, step in STEPS:
        code = f"{code}\n{step}" if step else code
        total = rss_after(code)
        print(f"  {label:<44} {_mb(total - previous):>8} {_mb(total):>9}")
        previous = total
    print(f"\n  not loaded by the {args.board} daemon; each would add, on top of it:")
    for label, step in NOT_LOADED:
        extra = rss_after(code + "\n" + step) - previous
        print(f"  {label:<44} {_mb(extra):>8}")

    anchor = rss_after(f"{NO_TLS}; import asyncio, sqlite3")
    goal_idle, goal_peak = GOALS.get(args.board, (None, None))
    with tempfile.TemporaryDirectory(prefix="csembed-mem-") as tmp:
        idle, after_scan = idle_daemon(Path(tmp), args.board, args.settle, args.files)
        synced = syncing_daemon(Path(tmp), args.board, int(args.recording_mib * MiB),
                                args.settle)
    print(f"\n(b, c) daemon on {args.board}; anchor: python with asyncio + sqlite3 imported; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  {'':<44} {'csembed':>8} {'anchor':>8} {'ratio':>6} {'goal':>6}")

    def line(label: str, ours: int, goal: float | None) -> None:
        print(f"  {label:<44} {_mb(ours):>8} {_mb(anchor):>8} {ours / anchor:>6.2f} "
              f"{'' if goal is None else f'<= {goal:g}':>6}")
    line(f"(b) idle RSS, {args.files} files, after a tick (MB)", idle, goal_idle)
    line("    idle RSS right after the first scan (MB)", after_scan, None)
    line(f"(c) peak RSS syncing (2x{args.recording_mib:g}+{args.recording_mib:g} MiB, MB)",
         synced["peak"], goal_peak)
    line("    RSS settled after the sync (MB)", synced["after"], goal_idle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
