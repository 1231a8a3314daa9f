"""Benchmark: what each part of the daemon costs in resident memory.

Usage::

    python tools/bench/memory.py [--board wifi-piano]

Each line is measured in a fresh interpreter (``VmRSS`` from /proc after the
imports), importing the parts cumulatively in the order the daemon loads
them, so a line's delta is what that part adds: the interpreter itself,
asyncio (with ``ssl`` blocked, as the daemon does), sqlite3, hashlib
(OpenSSL's libcrypto), PyNaCl (libsodium), then
our modules layer by layer. Then a real ``csembed daemon`` on the board
holding a share of 100 files: its RSS idle after the first scan, against
the bare interpreter (the anchor every Python daemon starts from) and the
board's goal (wifi-piano: idle <= 24 MB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STEPS = [
    ("interpreter", ""),
    # as in the daemon (csembed.cli_commands.daemon.without_tls): no ssl
    ("asyncio (ssl blocked)", "import sys; sys.modules['ssl'] = None; import asyncio"),
    ("sqlite3", "import sqlite3"),
    ("hashlib (libcrypto)", "import hashlib"),
    ("PyNaCl (libsodium)", "import nacl.bindings, nacl.signing"),
    ("csembed.native (C extension)", "import csembed.native"),
    ("protocol + security", "import csembed.protocol.core"),
    ("database", "import csembed.database.replica"),
    ("directory (scanner, store, engine)", "import csembed.directory.engine"),
    ("runtime, discovery, control (daemon)", "import csembed.runtime.daemon"),
]


def rss_after(code: str) -> int:
    probe = (f"{code}\nimport re\n"
             "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    return int(out.split()[-1]) * 1024


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def idle_daemon(board: str) -> tuple[int, int]:
    """(idle RSS, peak RSS) of a daemon on ``board`` holding 100 small files."""
    with tempfile.TemporaryDirectory(prefix="csembed-mem-") as tmp:
        base = Path(tmp)
        share = base / "share"
        share.mkdir()
        for i in range(100):
            (share / f"take{i:03d}.mid").write_bytes(os.urandom(2048))
        data = base / "data"
        proc = subprocess.Popen(
            [sys.executable, "-m", "csembed", "daemon", "--data-dir", str(data), "--board", board,
             "--listen", "127.0.0.1:0", "--no-lan", "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            subprocess.run([sys.executable, "-m", "csembed", "share", str(share), "--data-dir",
                            str(data), "--json"], check=True, capture_output=True, cwd=ROOT)
            from csembed.cli_commands.control_client import ControlClient
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with ControlClient(data / "control", timeout=30) as client:
                    shares = client.call("list_shares")["shares"]
                if shares and shares[0].get("scans", 0) >= 1:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # settle after the scan
            return status_kb(proc.pid, "VmRSS"), status_kb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="wifi-piano")
    args = parser.parse_args()
    print(f"resident memory by part (fresh interpreter each, imports cumulative); "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  {'part':<40} {'adds MB':>8} {'total MB':>9}")
    code, previous = "", 0
    for label, step in STEPS:
        code = f"{code}\n{step}" if step else code
        total = rss_after(code)
        print(f"  {label:<40} {(total - previous) / 1e6:>8.1f} {total / 1e6:>9.1f}")
        previous = total
    bare = rss_after("")
    idle, peak = idle_daemon(args.board)
    print(f"\ndaemon on {args.board}, one share of 100 files, after its first scan")
    print(f"  {'':<26} {'csembed':>10} {'bare python':>12} {'ratio':>7}")
    print(f"  {'idle RSS (MB)':<26} {idle / 1e6:>10.1f} {bare / 1e6:>12.1f} {idle / bare:>7.2f}")
    print(f"  {'peak RSS so far (MB)':<26} {peak / 1e6:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
