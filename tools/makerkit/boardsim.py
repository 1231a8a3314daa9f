"""Board simulator: a daemon runs as a given board against a laptop's and plays scenarios.

Theory of operation. As root, :func:`simulate` builds the board's world with
:mod:`makerkit.board_lab` -- a rate-limited link between two network
namespaces, a flash filesystem of the board's size, memory and CPU limits in
a cgroup -- and starts two real daemons through the CLI: the *device* (the
board's profile, its data and its recordings folder on the flash, in the
cgroup, in the device namespace) and the *laptop* (``desktop`` profile, in
the laptop namespace, dialling the device). The device shares its
recordings with a read-write code and the laptop attaches. Then the
scenarios of :data:`SCENARIOS` run in order, each waiting (by polling, with a
generous deadline) for both sides to hold the expected files:

* ``save`` -- the device saves N recordings; they reach the laptop;
* ``edit`` -- the owner edits one on the laptop; the change reaches the device;
* ``power_cut`` -- the device saves more, and is SIGKILLed while they are on
  the way; restarted, it finishes and nothing on either side is corrupt;
* ``link_drop`` -- the link goes down in the middle of a transfer and comes
  back; the transfer finishes.

Latency, jitter and connection resets, which ``tc tbf`` does not give, come
from ``csembed.lab.fault_proxy`` run in the laptop's namespace between the
laptop and the device (``--latency``, ``--jitter``, ``--reset-probability``).

A sampler thread reads, every quarter second, the device daemon's RSS
(``/proc/PID/status``), its ``write_bytes`` (``/proc/PID/io``, summed over
restarts) and the bytes through its interface (``/proc/PID/net/dev``, which
shows the namespace of that process). The report gives pass/fail and time per
scenario, peak RSS (``VmHWM``) against the RAM budget, flash bytes written per
byte synced, and an SVG plot of throughput and RSS over time.
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
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from csembed.board_profile import BoardProfile, load_board
from csembed.cli_commands.control_client import ControlClient
from csembed.lab.faults import parse_probability
from csembed.units import parse_duration
from makerkit import svg_plot
from makerkit.board_lab import Cgroup, Flash, LabError, Link

SCENARIOS = ("save", "edit", "power_cut", "link_drop")
#: share of one host core standing in for each bundled board's CPU (a rough guide)
CPU_SHARE = {"wifi-piano": 0.25, "rpi-zero-2w": 0.5, "rpi-4": 1.0}
RAM_SHARE = 0.25  #: the daemon's budget as a share of the board's RAM (as `boards check`)
PORT = 40121


@dataclass(frozen=True)
class Impairment:
    """Link faults a rate limit cannot give, applied by csembed.lab.fault_proxy.

    TCP hides packet loss as delay and retransmission, so a stream proxy offers
    what a lossy link looks like from above: latency, jitter and connection resets.
    """

    latency: float = 0.0  #: seconds added one way
    jitter: float = 0.0  #: up to this many seconds more, at random
    reset_probability: float = 0.0  #: chance per chunk that the connection is reset

    @property
    def active(self) -> bool:
        """Any fault set."""
        return bool(self.latency or self.jitter or self.reset_probability)

    def proxy_args(self) -> list[str]:
        """The fault proxy's options."""
        return ["--latency", f"{self.latency}s", "--jitter", f"{self.jitter}s",
                "--reset-probability", str(self.reset_probability)]

    def describe(self) -> str:
        """One line for the report."""
        if not self.active:
            return "none"
        return (f"latency {self.latency * 1000:g} ms + jitter up to {self.jitter * 1000:g} ms, "
                f"reset probability {self.reset_probability:g} per chunk (fault proxy)")


@dataclass
class ScenarioResult:
    """One scenario's outcome."""

    name: str
    ok: bool
    seconds: float
    detail: str
    bytes_synced: int = 0
    span: tuple[float, float] = (0.0, 0.0)  #: start and end, seconds since the run began


@dataclass
class Report:
    """Everything the simulator found, for text and JSON."""

    board: str
    setup: dict[str, str]
    scenarios: list[ScenarioResult] = field(default_factory=list)
    peak_rss: int = 0
    ram_budget: int = 0
    flash_written: int = 0
    bytes_synced: int = 0
    counts_writes: bool = True
    plot: str | None = None
    samples: list[tuple[float, float, int]] = field(default_factory=list)  #: t, B/s, RSS

    @property
    def ok(self) -> bool:
        """All scenarios passed."""
        return bool(self.scenarios) and all(s.ok for s in self.scenarios)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (samples left out; they are in the plot)."""
        out = asdict(self)
        out.pop("samples")
        out["ok"] = self.ok
        out["rss_within_budget"] = self.peak_rss <= self.ram_budget
        out["flash_bytes_per_byte_synced"] = self.write_ratio
        return out

    @property
    def write_ratio(self) -> float | None:
        """Flash bytes written by the device daemon per byte synced."""
        if not self.counts_writes or not self.bytes_synced:
            return None
        return round(self.flash_written / self.bytes_synced, 3)

    def text(self) -> str:
        """The report as a table."""
        lines = [f"board {self.board}"]
        lines += [f"  {k:<7} {v}" for k, v in self.setup.items()]
        lines.append(f"{'scenario':<11} {'result':<6} {'time':>8}  detail")
        for s in self.scenarios:
            lines.append(f"{s.name:<11} {'PASS' if s.ok else 'FAIL':<6} {s.seconds:>7.1f}s  "
                         f"{s.detail}")
        mib = 1 << 20
        lines.append(f"peak RSS {self.peak_rss / mib:.1f} MiB of a {self.ram_budget / mib:.0f} MiB "
                     f"budget ({RAM_SHARE:.0%} of board RAM): "
                     f"{'within' if self.peak_rss <= self.ram_budget else 'OVER'}")
        if self.write_ratio is None:
            lines.append("flash writes per byte synced: not measurable here "
                         "(tmpfs does not count write_bytes)")
        else:
            lines.append(f"flash writes per byte synced: {self.write_ratio:.3f} "
                         f"({self.flash_written / mib:.2f} MiB written by the device daemon, "
                         f"{self.bytes_synced / mib:.2f} MiB synced)")
        if self.plot:
            lines.append(f"plot: {self.plot}")
        lines.append("all scenarios passed" if self.ok else "SOME SCENARIOS FAILED")
        return "\n".join(lines)


class DeviceProcess:
    """A daemon started through the CLI, optionally in a namespace and a cgroup."""

    def __init__(self, argv: list[str], log: Path, prefix: list[str],
                 join: Callable[[], None] | None = None, *, module: str = "csembed",
                 ready_word: str = "ready") -> None:
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen([*prefix, sys.executable, "-m", module, *argv],
                                         stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL, preexec_fn=join)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline().decode() if ready else ""
        if ready_word not in line:
            self.stop()
            raise LabError(f"{module} did not start: {line!r}; see {log}")

    @property
    def pid(self) -> int:
        """The daemon's process ID (``ip netns exec`` execs it in place)."""
        return self.proc.pid

    def kill(self) -> None:
        """Power cut: SIGKILL, no chance to clean up."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Sampler(threading.Thread):
    """Samples the device daemon's RSS, write_bytes and link bytes (see module doc)."""

    def __init__(self, started: float) -> None:
        super().__init__(daemon=True)
        self.started = started
        self.pid: int | None = None
        self.iface = ""
        self.samples: list[tuple[float, float, int]] = []
        self.peak_rss = 0
        self.written_before = 0  #: write_bytes of earlier incarnations
        self._written = 0
        self._last: tuple[float, int] | None = None
        self._halt = threading.Event()

    def follow(self, pid: int) -> None:
        """A new incarnation of the device daemon; keep its predecessor's writes."""
        self.written_before += self._written
        self._written = 0
        self.pid = pid
        self._last = None

    @property
    def written(self) -> int:
        """write_bytes of every incarnation so far."""
        return self.written_before + self._written

    def _read(self, pid: int) -> tuple[int, int, int] | None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            io = Path(f"/proc/{pid}/io").read_text()
            net = Path(f"/proc/{pid}/net/dev").read_text()
        except OSError:
            return None
        fields = {k: v.split() for k, _, v in (line.partition(":") for line in
                                                status.splitlines())}
        self.peak_rss = max(self.peak_rss, int(fields.get("VmHWM", ["0"])[0]) * 1024)
        rss = int(fields.get("VmRSS", ["0"])[0]) * 1024
        written = int(next(line.split()[1] for line in io.splitlines()
                           if line.startswith("write_bytes")))
        moved = 0
        for line in net.splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == self.iface:
                numbers = rest.split()
                moved = int(numbers[0]) + int(numbers[8])
        return rss, written, moved

    def sample(self) -> None:
        """Take one sample now."""
        pid = self.pid
        if pid is None:
            return
        got = self._read(pid)
        if got is None:
            return
        rss, written, moved = got
        self._written = max(self._written, written)
        now = time.monotonic() - self.started
        if self._last is not None and now > self._last[0]:
            rate = max(0.0, (moved - self._last[1]) / (now - self._last[0]))
            self.samples.append((now, rate, rss))
        self._last = (now, moved)

    def run(self) -> None:
        while not self._halt.wait(0.25):
            self.sample()

    def stop(self) -> None:
        """Stop sampling."""
        self._halt.set()
        if self.is_alive():
            self.join(10)


def _wait(predicate: Callable[[], Any], timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class Simulation:
    """One run: the world, the two daemons and the scenarios (see the module docstring)."""

    def __init__(self, board: BoardProfile, stack: ExitStack, work: Path, *,
                 recordings: int, size: int, cpu: float | None, timeout: float,
                 tmpfs: bool, impair: Impairment | None = None) -> None:
        self.board = board
        self.impair = impair
        self.work = work
        self.recordings = recordings
        self.size = size
        self.timeout = timeout
        self.started = time.monotonic()
        flash_size = (board.storage.quota or 1 << 30) + board.storage.free_space_reserve \
            + (64 << 20)
        self.link = stack.enter_context(Link(board.network.upload_rate,
                                             board.network.download_rate))
        self.flash = stack.enter_context(Flash(flash_size, work, prefer_tmpfs=tmpfs))
        self.cgroup = stack.enter_context(Cgroup(board.ram, cpu))
        self.device_data = self.flash.mountpoint / "data"
        self.device_share = self.flash.mountpoint / "recordings"
        self.staging = self.flash.mountpoint / "staging"
        self.laptop_data = work / "laptop-data"
        self.laptop_share = work / "laptop-recordings"
        for d in (self.device_share, self.staging):
            d.mkdir()
        self.sampler = Sampler(self.started)
        self.sampler.iface = self.link.device_if
        self.expected: dict[str, str] = {}  # name -> sha256, what both sides must hold
        self.device: DeviceProcess | None = None
        self.laptop: DeviceProcess | None = None
        self.proxy: DeviceProcess | None = None
        self.serial = 0
        stack.callback(self._stop_all)

    # -- processes

    def start_device(self) -> None:
        """Start (or restart) the device daemon in its namespace and cgroup."""
        join = self.cgroup.join if self.cgroup.dirs else None
        self.device = DeviceProcess(
            ["daemon", "--data-dir", str(self.device_data), "--board", self.board.source,
             "--listen", f"{self.link.device_ip}:{PORT}", "--no-lan"],
            self.work / "device.log", self.link.exec_prefix(device=True), join)
        self.sampler.follow(self.device.pid)

    def start_laptop(self) -> None:
        """Start the laptop daemon, dialling the device (through the fault proxy, if any)."""
        peer = f"{self.link.device_ip}:{PORT}"
        if self.impair is not None and self.impair.active:
            # latency, jitter and resets: a userspace proxy in the laptop's namespace
            self.proxy = DeviceProcess(
                ["--listen", f"127.0.0.1:{PORT + 1}", "--target", peer,
                 *self.impair.proxy_args()],
                self.work / "proxy.log", self.link.exec_prefix(device=False),
                module="csembed.lab.fault_proxy", ready_word="fault proxy")
            peer = f"127.0.0.1:{PORT + 1}"
        self.laptop = DeviceProcess(
            ["daemon", "--data-dir", str(self.laptop_data), "--board", "desktop",
             "--listen", f"{self.link.laptop_ip}:{PORT}", "--no-lan", "--peer", peer],
            self.work / "laptop.log", self.link.exec_prefix(device=False))

    def _stop_all(self) -> None:
        try:
            self.sampler.stop()
        finally:
            for proc in (self.device, self.laptop, self.proxy):
                if proc is not None:
                    proc.stop()

    def call(self, device: bool, command: str, **args: Any) -> dict[str, Any]:
        """A control request to the device's or the laptop's daemon."""
        data = self.device_data if device else self.laptop_data
        with ControlClient(data / "control", timeout=60) as client:
            return client.call(command, **args)

    # -- files

    def save_recordings(self, count: int, size: int) -> int:
        """The device's application saves ``count`` recordings (temp, fsync, rename)."""
        for _ in range(count):
            self.serial += 1
            name = f"take-{self.serial:03d}.wav"
            data = b"RIFF" + os.urandom(size - 4)
            temp = self.staging / name
            with temp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.device_share / name)
            self.expected[name] = hashlib.sha256(data).hexdigest()
        self.call(True, "rescan")
        return count * size

    def holds(self, root: Path) -> bool:
        """``root`` holds exactly the expected recordings, intact, and no partial file."""
        try:
            names = {p.name for p in root.iterdir() if not p.name.startswith(".")}
        except OSError:
            return False
        return names == set(self.expected) and all(
            _digest(root / name) == sha for name, sha in self.expected.items())

    def synced(self) -> bool:
        """Both sides hold the expected recordings."""
        return self.holds(self.laptop_share) and self.holds(self.device_share)

    def partial_on_laptop(self) -> bool:
        """A transfer to the laptop is under way (a partial file, or some files but not all)."""
        try:
            names = [p.name for p in self.laptop_share.iterdir()]
        except OSError:
            return False
        done = [n for n in names if n in self.expected
                and _digest(self.laptop_share / n) == self.expected[n]]
        return any(".!clearsky" in n for n in names) or 0 < len(done) < len(self.expected)

    # -- scenarios

    def pair(self) -> None:
        """The device shares its recordings; the laptop attaches with the code."""
        self.call(True, "create_share", path=str(self.device_share))
        code = self.call(True, "create_access_code", path=str(self.device_share),
                         mode="read_write")["access_code"]
        self.call(False, "add_share", code=code, path=str(self.laptop_share))

    def run_scenario(self, name: str) -> ScenarioResult:
        """Run one scenario and time it."""
        start = time.monotonic()
        ok, detail, moved = getattr(self, f"scenario_{name}")()
        end = time.monotonic()
        return ScenarioResult(name, ok, end - start, detail, moved,
                              (start - self.started, end - self.started))

    def scenario_save(self) -> tuple[bool, str, int]:
        moved = self.save_recordings(self.recordings, self.size)
        ok = _wait(self.synced, self.timeout)
        return ok, f"{self.recordings} recordings, {moved / 1e6:.2f} MB to the laptop", moved

    def scenario_edit(self) -> tuple[bool, str, int]:
        name = sorted(self.expected)[0]
        path = self.laptop_share / name
        data = bytearray(path.read_bytes())
        data[100:104] = b"EDIT"
        data += os.urandom(64 * 1024)  # the owner trimmed the start and added a coda
        temp = self.work / "edit.tmp"
        temp.write_bytes(bytes(data))
        os.replace(temp, path)
        self.expected[name] = hashlib.sha256(bytes(data)).hexdigest()
        self.call(False, "rescan")
        ok = _wait(self.synced, self.timeout)
        return ok, f"{name} edited on the laptop ({len(data) / 1e6:.2f} MB) reached the " \
            "device", len(data)

    def scenario_power_cut(self) -> tuple[bool, str, int]:
        assert self.device is not None
        moved = self.save_recordings(3, max(self.size, self._in_flight_size()))
        started = _wait(self.partial_on_laptop, self.timeout, poll=0.02)
        self.sampler.sample()
        self.device.kill()
        self.start_device()
        ok = started and _wait(self.synced, self.timeout)
        detail = "SIGKILL mid-transfer, restarted; all files intact on both sides" if ok else \
            ("the transfer never started" if not started else "did not recover")
        return ok, detail, moved

    def scenario_link_drop(self) -> tuple[bool, str, int]:
        moved = self.save_recordings(2, max(self.size, self._in_flight_size()))
        started = _wait(self.partial_on_laptop, self.timeout, poll=0.02)
        self.link.set_up(False)
        time.sleep(3.0)  # the outage itself (not a synchronisation)
        self.link.set_up(True)
        ok = started and _wait(self.synced, self.timeout)
        detail = "link down 3 s mid-transfer; finished after it came back" if ok else \
            ("the transfer never started" if not started else "did not recover")
        return ok, detail, moved

    def _in_flight_size(self) -> int:
        """A file that takes about two seconds on the board's link, so it can be interrupted."""
        rate = self.board.network.upload_rate or 50_000_000
        return min(2 * rate, 64 << 20)


def simulate(board_name: str, *, recordings: int, size: int, cpu: float | None,
             timeout: float, workdir: Path | None, plot: Path | None,
             scenarios: tuple[str, ...] = SCENARIOS, tmpfs: bool = False,
             impair: Impairment | None = None) -> Report:
    """Build the board's world, run the scenarios, return the report."""
    board = load_board(board_name)
    report = Report(board.name, {}, ram_budget=int(board.ram * RAM_SHARE))
    with ExitStack() as stack:
        work = workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="csbs-", dir="/tmp")))
        sim = Simulation(board, stack, work, recordings=recordings, size=size, cpu=cpu,
                         timeout=timeout, tmpfs=tmpfs, impair=impair)
        rate = board.network
        report.setup = {
            "link": f"{rate.upload_rate / 1e6:g} MB/s up, {rate.download_rate / 1e6:g} MB/s "
                    "down (tc tbf on a veth pair between two network namespaces)",
            "flash": f"{sim.flash.size >> 20} MiB, {sim.flash.kind}",
            "limits": sim.cgroup.describe(),
        }
        if impair is not None and impair.active:
            report.setup["faults"] = impair.describe()
        report.counts_writes = sim.flash.counts_writes
        sim.start_device()
        sim.start_laptop()
        sim.sampler.start()
        sim.pair()
        for name in scenarios:
            result = sim.run_scenario(name)
            report.scenarios.append(result)
            if not result.ok:
                break
        sim.sampler.sample()
        report.peak_rss = sim.sampler.peak_rss
        report.flash_written = sim.sampler.written
        report.bytes_synced = sum(s.bytes_synced for s in report.scenarios)
        report.samples = list(sim.sampler.samples)
        if plot is not None:
            plot.write_text(svg_plot.render(
                [svg_plot.Series("throughput on the device's link", "MB/s",
                                 tuple((t, r / 1e6) for t, r, _ in report.samples)),
                 svg_plot.Series("device daemon RSS", "MiB",
                                 tuple((t, m / (1 << 20)) for t, _, m in report.samples),
                                 colour="#a8431f", limit=report.ram_budget / (1 << 20))],
                [(s.name, *s.span) for s in report.scenarios],
                f"csembed board simulator: {board.name}"))
            report.plot = str(plot)
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/boardsim``."""
    p = argparse.ArgumentParser(
        prog="boardsim",
        description="Run a csembed daemon as BOARD (its link rate, flash size, memory and CPU "
                    "imposed with network namespaces, tc, a loop-mounted filesystem and "
                    "cgroups) against a laptop's daemon, and play scenarios: save recordings, "
                    "edit one, power cut during sync, link drop. Needs root.")
    p.add_argument("board", help="bundled board name or profile .toml")
    p.add_argument("--recordings", type=int, default=5, help="recordings saved first (5)")
    p.add_argument("--size", type=int, default=512 * 1024, help="bytes per recording (512 KiB)")
    p.add_argument("--cpu", type=float, help="share of one host core for the device "
                   "(default per board: " + ", ".join(f"{k} {v}" for k, v in CPU_SHARE.items())
                   + "; none otherwise)")
    p.add_argument("--scenario", action="append", choices=SCENARIOS,
                   help="run only these (repeatable; default all, in order)")
    p.add_argument("--latency", type=parse_duration, default=0.0,
                   help="one-way latency added by a fault proxy, e.g. 50ms")
    p.add_argument("--jitter", type=parse_duration, default=0.0,
                   help="random extra latency up to this, e.g. 20ms")
    p.add_argument("--reset-probability", type=parse_probability, default=0.0,
                   help="chance per chunk that the proxy resets the connection, e.g. 0.001 "
                   "or 0.1%%")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per scenario (120)")
    p.add_argument("--tmpfs", action="store_true", help="flash as tmpfs, not ext4 on a loop "
                   "device (write_bytes is then not measurable)")
    p.add_argument("--workdir", type=Path, help="keep logs here (default: a temporary folder)")
    p.add_argument("--plot", type=Path, help="write the SVG plot here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("boardsim: needs root (network namespaces, tc, mount, cgroups)", file=sys.stderr)
        return 2
    if os.environ.get("CSEMBED_BOARDSIM_NS") != "1" and shutil.which("unshare"):
        # Mount the flash in a mount namespace of our own, so processes that others
        # start meanwhile (ip netns exec copies every mount) never pin it, and so it
        # goes away with us whatever happens.
        os.environ["CSEMBED_BOARDSIM_NS"] = "1"
        return subprocess.call(["unshare", "--mount", "--propagation", "private", "--",
                                sys.executable, sys.argv[0], *(argv or sys.argv[1:])])
    board = load_board(args.board)
    cpu = args.cpu if args.cpu is not None else CPU_SHARE.get(board.name)
    try:
        report = simulate(args.board, recordings=args.recordings, size=args.size, cpu=cpu,
                          timeout=args.timeout, workdir=args.workdir, plot=args.plot,
                          scenarios=tuple(args.scenario or SCENARIOS), tmpfs=args.tmpfs,
                          impair=Impairment(args.latency, args.jitter,
                                            args.reset_probability))
    except LabError as exc:
        print(f"boardsim: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1
