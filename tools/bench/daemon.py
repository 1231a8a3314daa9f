"""Benchmark: the whole daemon, driven through its CLI like a user would.

Usage::

    python tools/bench/daemon.py [--quick] [--only idle|attach|rate]

Three cases, each with real ``csembed daemon`` processes on loopback and an
anchor measured in the same run:

(a) **idle**: RSS and CPU of a daemon holding a share of 10,000 files, after
    its first scan, over a 20 s window (the desktop board rescans every 10 s,
    so the window includes rescans). Anchor: a bare Python interpreter idling
    in an asyncio loop (the floor any Python daemon starts from).
(b) **attach**: time from ``csembed attach`` to a fully synced copy of 200
    files / 264 MiB (encrypted, over loopback TCP, both on the desktop board).
    Anchor: ``rsync -a`` of the same tree between two local folders (no
    network, no encryption, no database), or ``cp -a`` without rsync.
(c) **rate**: a 20 MB file from a daemon whose board limits upload to
    1 MB/s (``wifi-piano``). Anchor: the limit itself, 20 s; the transfer
    should take at least ~18 s (the token bucket allows a burst of 1/8 s).

``--quick`` shrinks each case about tenfold (for a smoke run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MiB = 1 << 20


def cli(data: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "csembed", *args, "--data-dir", str(data)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"csembed {' '.join(args)} failed: {result.stderr}")
    return result.stdout


class Daemon:
    def __init__(self, base: Path, name: str, board: str, *extra: str) -> None:
        self.data = base / f"{name}-data"
        self.log = (base / f"{name}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "csembed", "daemon", "--data-dir", str(self.data), "--board",
             board, "--listen", "127.0.0.1:0", "--no-lan", "--log-level", "warning", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise SystemExit(f"daemon {name} did not start; see {base / (name + '.log')}")
        self.address = line.split("listening on ", 1)[1].split(",", 1)[0]

    def call(self, command: str, **params: Any) -> dict[str, Any]:
        from csembed.cli_commands.control_client import ControlClient
        with ControlClient(self.data / "control", timeout=60) as client:
            return client.call(command, **params)

    def share(self, path: Path) -> dict[str, Any]:
        return next(s for s in self.call("list_shares")["shares"] if s["path"] == str(path))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def proc_usage(pid: int) -> tuple[int, float]:
    """(RSS in bytes, CPU seconds) of a process, from /proc."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def wait(predicate: Any, what: str, timeout: float = 1800.0, interval: float = 0.1) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def row(label: str, ours: str, anchor: str, ratio: str) -> None:
    print(f"  {label:<34} {ours:>16} {anchor:>16} {ratio:>10}")


def case_idle(base: Path, files: int, window: float) -> dict[str, Any]:
    share = base / "idle-share"
    for i in range(files):
        folder = share / f"d{i // 250:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(hashlib.sha256(str(i).encode()).digest() * 128)
    daemon = Daemon(base, "idle", "desktop")
    try:
        started = time.monotonic()
        cli(daemon.data, "share", str(share))
        # "waiting": scanned, but no peer has the files yet
        wait(lambda: daemon.share(share).get("scans", 0) >= 1
             and daemon.share(share)["status"] in ("synced", "waiting"), "the first scan",
             interval=0.5)
        first_scan = time.monotonic() - started
        rss0, cpu0 = proc_usage(daemon.proc.pid)
        time.sleep(window)  # the measurement window itself, not a synchronisation
        rss, cpu1 = proc_usage(daemon.proc.pid)
    finally:
        daemon.stop()
    floor = subprocess.Popen([sys.executable, "-c",
                              "import asyncio; asyncio.run(asyncio.sleep(3600))"])
    try:
        time.sleep(1.0)
        frss0, fcpu0 = proc_usage(floor.pid)
        time.sleep(window)
        frss, fcpu1 = proc_usage(floor.pid)
    finally:
        floor.kill()
        floor.wait()
    cpu = (cpu1 - cpu0) / window * 100
    fcpu = (fcpu1 - fcpu0) / window * 100
    print(f"(a) idle daemon holding {files:,} files (first scan {first_scan:.1f} s), "
          f"{window:g} s window")
    row("", "csembed", "bare python", "ratio")
    row("RSS", f"{rss / MiB:.1f} MiB", f"{frss / MiB:.1f} MiB", f"{rss / frss:.1f}x")
    row("CPU (incl. rescans every 10 s)", f"{cpu:.2f} %", f"{fcpu:.2f} %", "")
    return {"files": files, "rss": rss, "cpu_percent": cpu, "anchor_rss": frss,
            "anchor_cpu_percent": fcpu, "first_scan_seconds": first_scan}


def _make_tree(root: Path, files: int, total: int) -> None:
    root.mkdir(parents=True)
    size = total // files
    block = os.urandom(MiB)
    for i in range(files):
        with (root / f"take{i:03d}.wav").open("wb") as fh:
            left = size
            fh.write(i.to_bytes(8, "big"))
            left -= 8
            while left > 0:
                piece = block[:min(left, MiB)]
                fh.write(piece)
                left -= len(piece)


def _synced(daemon: Daemon, path: Path, files: int, size: int) -> bool:
    share = daemon.share(path)
    if share["status"] == "attaching" or share.get("files_to_sync"):
        return False
    try:
        names = os.listdir(path)
        return len(names) == files and all((path / n).stat().st_size == size for n in names)
    except FileNotFoundError:  # a download was renamed into place meanwhile
        return False


def _tree_hash(root: Path) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(root)):
        digest = hashlib.sha256()
        with (root / name).open("rb") as fh:
            while chunk := fh.read(MiB):
                digest.update(chunk)
        out[name] = digest.hexdigest()
    return out


def case_attach(base: Path, files: int, total: int) -> dict[str, Any]:
    src = base / "attach-A"
    _make_tree(src, files, total)
    size = total // files
    a = Daemon(base, "attach-a", "desktop")
    b = Daemon(base, "attach-b", "desktop", "--peer", a.address)
    try:
        code = json.loads(cli(a.data, "share", str(src), "--json"))["access_code"]
        wait(lambda: a.share(src).get("scans", 0) >= 1
             and a.share(src)["status"] in ("synced", "waiting"),
             "A's first scan", interval=0.2)
        dst = base / "attach-B"
        os.sync()
        started = time.monotonic()
        cli(b.data, "attach", code, str(dst))
        wait(lambda: _synced(b, dst, files, size), "B to be synced", interval=0.1)
        seconds = time.monotonic() - started
        same = _tree_hash(src) == _tree_hash(dst)
    finally:
        a.stop()
        b.stop()
    anchor_dst = base / "anchor-copy"
    os.sync()
    t0 = time.monotonic()
    if shutil.which("rsync"):
        anchor_name = "rsync -a"
        subprocess.run(["rsync", "-a", f"{src}/", f"{anchor_dst}/"], check=True)
    else:
        anchor_name = "cp -a"
        subprocess.run(["cp", "-a", str(src), str(anchor_dst)], check=True)
    anchor = time.monotonic() - t0
    mb = files * size / 1e6
    print(f"\n(b) attach -> fully synced, {files} files / {files * size / MiB:.0f} MiB, "
          f"identical: {'yes' if same else 'NO'}")
    row("", "csembed", anchor_name, "ratio")
    row("seconds", f"{seconds:.2f} s", f"{anchor:.2f} s", f"{seconds / anchor:.1f}x")
    row("throughput", f"{mb / seconds:.1f} MB/s", f"{mb / anchor:.1f} MB/s", "")
    return {"files": files, "bytes": files * size, "seconds": seconds, "anchor": anchor_name,
            "anchor_seconds": anchor, "identical": same}


def case_rate(base: Path, total: int) -> dict[str, Any]:
    src = base / "rate-A"
    src.mkdir()
    (src / "recital.wav").write_bytes(os.urandom(total))
    a = Daemon(base, "rate-a", "wifi-piano")
    b = Daemon(base, "rate-b", "desktop", "--peer", a.address)
    try:
        code = json.loads(cli(a.data, "share", str(src), "--json"))["access_code"]
        wait(lambda: a.share(src).get("scans", 0) >= 1
             and a.share(src)["status"] in ("synced", "waiting"),
             "A's first scan", interval=0.2)
        dst = base / "rate-B"
        cli(b.data, "attach", code, str(dst))
        started = time.monotonic()
        wait(lambda: (dst / "recital.wav").exists(), "the file", interval=0.05)
        seconds = time.monotonic() - started
    finally:
        a.stop()
        b.stop()
    limit = 1_000_000
    print(f"\n(c) {total / 1e6:.0f} MB from a wifi-piano board (upload limit 1 MB/s)")
    row("", "csembed", "the limit", "ratio")
    row("seconds", f"{seconds:.1f} s", f"{total / limit:.1f} s",
        f"{seconds / (total / limit):.2f}x")
    row("rate", f"{total / seconds / 1e6:.3f} MB/s", "1.000 MB/s", "")
    return {"bytes": total, "seconds": seconds, "limit": limit,
            "at_least_18s": seconds >= 18 * total / 20_000_000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("idle", "attach", "rate"))
    parser.add_argument("--json", action="store_true", help="also print results as JSON")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    base = Path(tempfile.mkdtemp(prefix="csbench", dir="/tmp"))
    results: dict[str, Any] = {}
    try:
        print(f"csembed daemon benchmark ({'quick' if args.quick else 'full'}); "
              f"CSEMBED_BACKEND={os.environ.get('CSEMBED_BACKEND', 'auto')}\n")
        if args.only in (None, "idle"):
            results["idle"] = case_idle(base, 10_000 // scale, 20.0 / (2 if args.quick else 1))
        if args.only in (None, "attach"):
            results["attach"] = case_attach(base, 200 // scale, 264 * MiB // scale)
        if args.only in (None, "rate"):
            results["rate"] = case_rate(base, 20_000_000 // scale)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
