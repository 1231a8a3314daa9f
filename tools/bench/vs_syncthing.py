"""Benchmark: csembed beside Syncthing on Syncthing's own kind of work, in one run.

Usage::

    python tools/bench/vs_syncthing.py [--quick] [--only bulk|small|latency]
                                       [--pin] [--syncthing PATH] [--cache DIR]
                                       [--profile DIR] [--no-recycle]

For each case both products run as two headless daemons on loopback,
already paired, one sending and one receiving: csembed as two ``csembed
daemon`` processes (a share on A, attached on B), Syncthing as two
``syncthing serve`` processes with generated configs (a send-only folder on
A, receive-only on B, devices paired by ID with fixed loopback addresses;
global/local discovery, relays, NAT traversal, usage and crash reporting
and upgrades off; GUI/REST on 127.0.0.1 with an API key). Then:

1. the payload is written into a staging folder beside A's folder and moved
   into it with one rename (so neither side sees it half-written);
2. the clock starts, and a scan is requested (``csembed rescan`` through the
   control socket; ``POST /rest/db/scan`` on Syncthing);
3. the clock stops when B's folder holds every file at its full size.

Before step 1 a scratch file of twice the payload's size is written into
the case's folder and deleted (:func:`recycle_page_cache`), so that both
products write into page-cache pages the system has used before. Without it
the product measured first (csembed) pays for the first touch of fresh
memory and the second one (Syncthing) reuses the pages freed when the first
one's folders were removed: on a virtual machine that first touch cost
about 0.8 s of kernel time per 264 MiB written here (``copy_folio_from_iter``
under ``write``), a third of csembed's bulk figure, and none of it
Syncthing's. ``--no-recycle`` measures without it.

Cases: **bulk** 200 x 1 MiB + one 64 MiB file, random (incompressible);
**small** 10,000 x 4 KiB random files in 10 folders; **latency** one small
file saved in the folder with no scan requested -- csembed's change
notification against Syncthing's watcher (default 10 s delay) -- repeated
five times. Printed per case: seconds, CPU seconds of both daemons over the
measured interval, each daemon's peak RSS (``VmHWM`` from /proc), and the
ratio csembed / Syncthing.

``--csembed-root DIR`` runs csembed from another checkout (``python -m
csembed`` with that working directory), for before/after figures.
``--pin`` runs every daemon under ``taskset -c 0`` and csembed with the
``rpi-zero-2w`` board (the default is ``desktop``). csembed's upload and
download limits are set to 0 (unlimited) on every board, as Syncthing's are. Syncthing comes from
Debian's package: ``--syncthing PATH``, or it is fetched with ``apt-get
download syncthing`` and unpacked with ``dpkg -x`` into ``--cache`` (default
``~/.cache/csembed-bench``); the binary is never part of the repository.

``--profile DIR`` runs each csembed daemon under cProfile and leaves
``DIR/<case>-a.prof`` (sender) and ``DIR/<case>-b.prof`` (receiver), written
when the daemon stops; read them with ``python -m pstats``. Profiling slows
csembed down, so its seconds are not comparable with an unprofiled run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MiB = 1 << 20
TIMEOUT = 1800.0


# -- processes and /proc ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (Syncthing runs its worker under a monitor process)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in glob.glob(f"/proc/{current}/task/*/children"):
            try:
                todo += [int(c) for c in Path(task).read_text().split()]
            except OSError:
                pass
    return out


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    total = 0.0
    for member in family(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss(pid: int) -> int:
    """The largest peak RSS (``VmHWM``) among ``pid`` and its descendants."""
    peak = 0
    for member in family(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return peak


def wait(predicate: Any, what: str, timeout: float = TIMEOUT, interval: float = 0.05) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Arrival:
    """Polls a folder until every expected file is there at full size."""

    def __init__(self, root: Path, expected: dict[str, int]) -> None:
        self.root = root
        self.missing = dict(expected)

    def __call__(self) -> bool:
        for rel, size in list(self.missing.items()):
            try:
                if os.stat(self.root / rel).st_size == size:
                    del self.missing[rel]
            except OSError:
                return False
        return not self.missing


# -- payloads ------------------------------------------------------------------------------


def write_payload(stage: Path, case: str, scale: float) -> dict[str, int]:
    """Write the case's files under ``stage``; returns relative path -> size."""
    files: dict[str, int] = {}
    if case == "bulk":
        for i in range(max(1, int(200 * scale))):
            files[f"bulk/f{i:03d}.bin"] = MiB
        files["bulk/big.bin"] = max(MiB, int(64 * MiB * scale))
    else:
        count = max(10, int(10_000 * scale))
        for i in range(count):
            files[f"small/d{i % 10}/f{i:05d}.bin"] = 4096
    for rel, size in files.items():
        path = stage / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    os.sync()
    return files


# -- csembed ----------------------------------------------------------------------------------


class CsembedPair:
    name = "csembed"

    def __init__(self, base: Path, board: str, prefix: list[str], root: Path = ROOT,
                 profile: Path | None = None) -> None:
        self.base = base
        self.root = root
        self.profile = profile
        self.src, self.dst = base / "cs-A", base / "cs-B"
        self.src.mkdir()
        (self.src / "hello.txt").write_text("paired\n")
        self.a = self._daemon("a", board, prefix)
        self.b = self._daemon("b", board, prefix, "--peer", self.a_address)
        for data in (self.a_data, self.b_data):  # Syncthing runs unlimited too
            for limit in ("upload_limit", "download_limit"):
                self._cli(data, "config", limit, "0")
        code = json.loads(self._cli(self.a_data, "share", str(self.src), "--json"))["access_code"]
        self._cli(self.b_data, "attach", code, str(self.dst), "--timeout", "120")
        wait(lambda: (self.dst / "hello.txt").exists(), "csembed B to pair")

    def _daemon(self, name: str, board: str, prefix: list[str], *extra: str
                ) -> subprocess.Popen[str]:
        data = self.base / f"cs-{name}-data"
        setattr(self, f"{name}_data", data)
        log = (self.base / f"cs-{name}.log").open("ab")
        profiler = ([] if self.profile is None else
                    ["-m", "cProfile", "-o", f"{self.profile}-{name}.prof"])
        proc = subprocess.Popen(
            [*prefix, sys.executable, *profiler, "-m", "csembed", "daemon", "--data-dir", str(data),
             "--board", board, "--listen", "127.0.0.1:0", "--no-lan", "--log-level", "warning",
             *extra], stdout=subprocess.PIPE, stderr=log, text=True, cwd=self.root)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on " not in line:
            raise SystemExit(f"csembed daemon {name} did not start; see {log.name}")
        if name == "a":
            self.a_address = line.split("listening on ", 1)[1].split(",", 1)[0]
        return proc

    def _cli(self, data: Path, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "csembed", *args, "--data-dir", str(data)],
                                capture_output=True, text=True, timeout=600, cwd=self.root)
        if result.returncode != 0:
            raise SystemExit(f"csembed {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    @property
    def pids(self) -> list[int]:
        return [self.a.pid, self.b.pid]

    def request_scan(self) -> None:
        from csembed.cli_commands.control_client import ControlClient
        with ControlClient(self.a_data / "control", timeout=60) as client:
            client.call("rescan", path=str(self.src))

    def close(self) -> None:
        stop(self.a)
        stop(self.b)


# -- Syncthing -------------------------------------------------------------------------------


def find_syncthing(explicit: str | None, cache: Path) -> Path:
    if explicit:
        return Path(explicit)
    binary = cache / "syncthing" / "usr" / "bin" / "syncthing"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "syncthing"], cwd=cache, check=True,
                   capture_output=True)
    debs = sorted(glob.glob(str(cache / "syncthing_*.deb")))
    if not debs:
        raise SystemExit("apt-get download syncthing produced no .deb")
    subprocess.run(["dpkg", "-x", debs[-1], str(cache / "syncthing")], check=True)
    return binary


def _set(parent: ET.Element, tag: str, text: str) -> None:
    element = parent.find(tag)
    if element is None:
        element = ET.SubElement(parent, tag)
    element.text = text


class SyncthingNode:
    def __init__(self, binary: Path, home: Path, folder: Path) -> None:
        self.binary, self.home, self.folder = binary, home, folder
        subprocess.run([str(binary), "generate", f"--home={home}", "--no-default-folder",
                        "--skip-port-probing"], check=True, capture_output=True)
        self.device_id = subprocess.run(
            [str(binary), "serve", f"--home={home}", "--device-id"], check=True,
            capture_output=True, text=True).stdout.strip()
        self.gui_port, self.sync_port = free_port(), free_port()
        self.api_key = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, other: SyncthingNode, folder_type: str) -> None:
        path = self.home / "config.xml"
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        assert gui is not None
        _set(gui, "address", f"127.0.0.1:{self.gui_port}")
        _set(gui, "apikey", self.api_key)
        options = root.find("options")
        assert options is not None
        for tag, value in [("listenAddress", f"tcp://127.0.0.1:{self.sync_port}"),
                           ("globalAnnounceEnabled", "false"),
                           ("localAnnounceEnabled", "false"), ("relaysEnabled", "false"),
                           ("natEnabled", "false"), ("urAccepted", "-1"),
                           ("startBrowser", "false"), ("crashReportingEnabled", "false"),
                           ("autoUpgradeIntervalH", "0"), ("setLowPriority", "false")]:
            _set(options, tag, value)
        peer = ET.Element("device", {"id": other.device_id, "name": "peer",
                                     "compression": "metadata", "introducer": "false"})
        ET.SubElement(peer, "address").text = f"tcp://127.0.0.1:{other.sync_port}"
        root.insert(0, peer)
        folder = ET.Element("folder", {"id": "bench", "label": "bench", "path": str(self.folder),
                                       "type": folder_type, "rescanIntervalS": "3600",
                                       "fsWatcherEnabled": "true", "fsWatcherDelayS": "10"})
        for device in (self.device_id, other.device_id):
            ET.SubElement(folder, "device", {"id": device})
        root.insert(0, folder)
        tree.write(path)
        (self.folder / ".stfolder").mkdir(parents=True, exist_ok=True)

    def start(self, prefix: list[str]) -> None:
        log = (self.home / "serve.log").open("ab")
        env = dict(os.environ, STNORESTART="1", STNOUPGRADE="1", STNODEFAULTFOLDER="1")
        self.proc = subprocess.Popen(
            [*prefix, str(self.binary), "serve", f"--home={self.home}", "--no-browser",
             "--no-restart", "--no-upgrade"], stdout=log, stderr=log, env=env)

    def rest(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.gui_port}{path}",
                                         method=method, headers={"X-API-Key": self.api_key})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def try_rest(self, method: str, path: str) -> Any:
        try:
            return self.rest(method, path)
        except OSError:
            return None


class SyncthingPair:
    name = "Syncthing"

    def __init__(self, base: Path, binary: Path, prefix: list[str]) -> None:
        self.src, self.dst = base / "st-A", base / "st-B"
        self.src.mkdir()
        (self.src / "hello.txt").write_text("paired\n")
        self.a = SyncthingNode(binary, base / "st-a-home", self.src)
        self.b = SyncthingNode(binary, base / "st-b-home", self.dst)
        self.a.configure(self.b, "sendonly")
        self.b.configure(self.a, "receiveonly")
        self.a.start(prefix)
        self.b.start(prefix)

        def connected() -> bool:
            status = self.a.try_rest("GET", "/rest/system/connections")
            return bool(status and status["connections"].get(self.b.device_id, {})
                        .get("connected"))

        wait(connected, "Syncthing devices to connect", timeout=120, interval=0.2)
        wait(lambda: (self.dst / "hello.txt").exists(), "Syncthing B to pair", timeout=120)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self.a.proc, self.b.proc) if p is not None]

    def request_scan(self) -> None:
        self.a.rest("POST", "/rest/db/scan?folder=bench")

    def close(self) -> None:
        for node in (self.a, self.b):
            if node.proc is not None:
                stop(node.proc)


# -- cases --------------------------------------------------------------------------------------


def recycle_page_cache(base: Path, size: int) -> None:
    """Write ``size`` bytes to a scratch file under ``base`` and delete it, so
    the writes that follow reuse page-cache pages instead of fresh memory."""
    scratch = base / "recycle.tmp"
    block = os.urandom(MiB)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(-(-size // MiB)):
            os.write(fd, block)
    finally:
        os.close(fd)
        os.unlink(scratch)


def measure(pair: Any, base: Path, case: str, scale: float,
            recycle: bool = True) -> dict[str, Any]:
    stage = base / f"stage-{pair.name}"
    stage.mkdir()
    files = write_payload(stage, case, scale)
    if recycle:
        recycle_page_cache(base, 2 * sum(files.values()))
    arrival = Arrival(pair.dst, files)
    cpu_before = [cpu_seconds(p) for p in pair.pids]
    top = case  # every payload lives in one top folder, moved in with one rename
    started = time.monotonic()
    os.rename(stage / top, pair.src / top)
    pair.request_scan()
    wait(arrival, f"{pair.name} B to hold every file", interval=0.05)
    seconds = time.monotonic() - started
    cpu = sum(cpu_seconds(p) - c for p, c in zip(pair.pids, cpu_before, strict=True))
    rss = [peak_rss(p) for p in pair.pids]
    return {"seconds": seconds, "cpu": cpu, "rss_a": rss[0], "rss_b": rss[1],
            "files": len(files), "bytes": sum(files.values())}


def measure_latency(pair: Any, rounds: int) -> dict[str, Any]:
    samples = []
    for i in range(rounds):
        rel = f"saved-{i}.txt"
        text = f"saved {i}\n" * 20
        started = time.monotonic()
        (pair.src / rel).write_text(text)
        wait(Arrival(pair.dst, {rel: len(text)}), f"{pair.name} to carry a saved file",
             timeout=120, interval=0.01)
        samples.append(time.monotonic() - started)
    rss = [peak_rss(p) for p in pair.pids]
    return {"seconds": max(samples), "median": sorted(samples)[len(samples) // 2],
            "samples": samples, "cpu": 0.0, "rss_a": rss[0], "rss_b": rss[1]}


def row(label: str, ours: str, anchor: str, ratio: str) -> None:
    print(f"  {label:<26} {ours:>14} {anchor:>14} {ratio:>8}")


def report(case: str, ours: dict[str, Any], anchor: dict[str, Any]) -> None:
    what = {"bulk": f"{ours.get('files')} files / {ours.get('bytes', 0) / MiB:.0f} MiB random",
            "small": f"{ours.get('files')} files of 4 KiB random",
            "latency": "a saved file, no scan requested (worst of 5)"}[case]
    print(f"\n{case}: {what}")
    row("", "csembed", "Syncthing", "ratio")
    row("seconds", f"{ours['seconds']:.2f}", f"{anchor['seconds']:.2f}",
        f"{ours['seconds'] / anchor['seconds']:.2f}")
    if case == "latency":
        row("median seconds", f"{ours['median']:.2f}", f"{anchor['median']:.2f}",
            f"{ours['median'] / anchor['median']:.2f}")
    else:
        row("CPU seconds (both daemons)", f"{ours['cpu']:.1f}", f"{anchor['cpu']:.1f}",
            f"{ours['cpu'] / max(anchor['cpu'], 0.01):.2f}")
    if case == "small":
        row("files/s", f"{ours['files'] / ours['seconds']:.0f}",
            f"{anchor['files'] / anchor['seconds']:.0f}", "")
    for side in ("a", "b"):
        row(f"peak RSS {side.upper()} (MB)", f"{ours['rss_' + side] / 1e6:.0f}",
            f"{anchor['rss_' + side] / 1e6:.0f}",
            f"{ours['rss_' + side] / anchor['rss_' + side]:.2f}")
    ratio = ours["seconds"] / anchor["seconds"]
    rss = max(ours["rss_a"] / anchor["rss_a"], ours["rss_b"] / anchor["rss_b"])
    if case == "latency":
        goals = [("every saved file on B within 1 s", ours["seconds"] < 1.0)]
    elif case == "bulk":
        goals = [("time <= 0.5x Syncthing's", ratio <= 0.5)]
    else:
        goals = [("time <= 0.15x Syncthing's", ratio <= 0.15),
                 (">= 1,500 files/s", ours["files"] / ours["seconds"] >= 1500)]
    if case != "latency":
        goals.append(("peak RSS <= 0.5x Syncthing's", rss <= 0.5))
    for goal, met in goals:
        print(f"  goal: {goal}: {'met' if met else 'NOT met'}")


def run_case(case: str, args: argparse.Namespace, binary: Path, board: str,
             prefix: list[str]) -> dict[str, Any]:
    scale = 0.1 if args.quick else 1.0
    results: dict[str, dict[str, Any]] = {}
    for name in ("csembed", "Syncthing"):
        base = Path(tempfile.mkdtemp(prefix=f"vs-st-{case}-{name}-", dir=args.tmp))
        pair: Any = None
        try:
            profile = None if args.profile is None else Path(args.profile) / case
            pair = (CsembedPair(base, board, prefix, Path(args.csembed_root), profile)
                    if name == "csembed"
                    else SyncthingPair(base, binary, prefix))
            results[name] = (measure_latency(pair, 5) if case == "latency"
                             else measure(pair, base, case, scale, not args.no_recycle))
        finally:
            if pair is not None:
                pair.close()
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
    report(case, results["csembed"], results["Syncthing"])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of each payload")
    parser.add_argument("--only", choices=["bulk", "small", "latency"], action="append")
    parser.add_argument("--pin", action="store_true",
                        help="taskset -c 0 for every daemon; csembed on the rpi-zero-2w board")
    parser.add_argument("--syncthing", help="path of a syncthing binary")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "csembed-bench"))
    parser.add_argument("--tmp", default=None, help="where to make the folders")
    parser.add_argument("--keep", action="store_true", help="keep folders and logs")
    parser.add_argument("--no-recycle", action="store_true",
                        help="no scratch write before the clock (see the module docstring)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--csembed-root", default=str(ROOT),
                        help="run csembed from this checkout (before/after figures)")
    parser.add_argument("--profile", metavar="DIR",
                        help="run the csembed daemons under cProfile; .prof files go to DIR")
    args = parser.parse_args()
    if args.profile is not None:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    binary = find_syncthing(args.syncthing, Path(args.cache))
    version = subprocess.run([str(binary), "--version"], capture_output=True,
                             text=True).stdout.split(" (")[0]
    board = "rpi-zero-2w" if args.pin else "desktop"
    prefix = ["taskset", "-c", "0"] if args.pin else []
    print(f"csembed ({board} board) vs {version}{' pinned to core 0' if args.pin else ''}; "
          f"load average {os.getloadavg()[0]:.2f} at start")
    out = {case: run_case(case, args, binary, board, prefix)
           for case in (args.only or ["bulk", "small", "latency"])}
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    if args.json:
        print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
