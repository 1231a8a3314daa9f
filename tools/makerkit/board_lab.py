"""The board's limits, imposed for real: link, flash, memory and CPU.

Theory of operation. Each limit is a context manager that sets something up
as root and tears it down on exit, so an :class:`contextlib.ExitStack` undoes
everything in reverse order even after a failure:

* :class:`Link` -- two network namespaces (device and laptop) joined by a veth
  pair with private addresses in 10.77.N.0/24; each end's egress goes through
  ``tc tbf`` at the board's upload (device) or download (laptop) rate. The
  link can be dropped and restored (``ip link set down/up``).
* :class:`Flash` -- a filesystem of the board's size: an ext4 image on a loop
  device (so ``/proc/PID/io`` ``write_bytes`` counts what reaches the
  "flash"), or, where loop devices or ``mkfs.ext4`` are missing, a tmpfs
  with ``size=`` (then ``write_bytes`` stays 0 and the report says so).
* :class:`Cgroup` -- memory and CPU limits through cgroup v2 (``memory.max``,
  ``cpu.max``) or, on a v1 hierarchy, ``memory.limit_in_bytes`` and
  ``cpu.cfs_quota_us``; made as children of this process's own cgroups so
  every limit above them still applies. Where neither can be written the
  limits are not imposed and the report flags it; memory is measured anyway.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType


class LabError(Exception):
    """A limit could not be set up; the message says which and why."""


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


class Link:
    """Device and laptop namespaces joined by a rate-limited veth pair."""

    def __init__(self, upload_rate: int, download_rate: int) -> None:
        tag = secrets.token_hex(3)
        self.device_ns, self.laptop_ns = f"csbs-{tag}-d", f"csbs-{tag}-l"
        self.device_if, self.laptop_if = f"csd{tag}", f"csl{tag}"
        net = 1 + secrets.randbelow(250)
        self.device_ip, self.laptop_ip = f"10.77.{net}.2", f"10.77.{net}.1"
        self.upload_rate, self.download_rate = upload_rate, download_rate

    def __enter__(self) -> Link:
        try:
            for ns in (self.device_ns, self.laptop_ns):
                _run("ip", "netns", "add", ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", self.device_if, "netns", self.device_ns, "type", "veth",
                 "peer", "name", self.laptop_if, "netns", self.laptop_ns)
            for ns, dev, ip, rate in ((self.device_ns, self.device_if, self.device_ip,
                                       self.upload_rate),
                                      (self.laptop_ns, self.laptop_if, self.laptop_ip,
                                       self.download_rate)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
                if rate:
                    burst = max(16 * 1024, rate // 50)
                    _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                         "tbf", "rate", f"{rate * 8}bit", "burst", str(burst),
                         "latency", "400ms")
        except LabError:
            self.__exit__(None, None, None)
            raise
        return self

    def set_up(self, up: bool) -> None:
        """Drop (``False``) or restore (``True``) the link at the device's end."""
        _run("ip", "-n", self.device_ns, "link", "set", self.device_if, "up" if up else "down")

    def exec_prefix(self, device: bool) -> list[str]:
        """Argv prefix that runs a command inside the device's or laptop's namespace."""
        return ["ip", "netns", "exec", self.device_ns if device else self.laptop_ns]

    def __exit__(self, *exc: object) -> None:
        for ns in (self.device_ns, self.laptop_ns):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=60)


class Flash:
    """A filesystem of ``size`` bytes mounted at ``mountpoint``."""

    def __init__(self, size: int, workdir: Path, prefer_tmpfs: bool = False) -> None:
        self.size = size
        self.workdir = workdir
        self.mountpoint = workdir / "flash"
        self.image = workdir / "flash.img"
        self.kind = "tmpfs" if prefer_tmpfs else "ext4 on a loop device"
        self.counts_writes = False
        self._mounted = False

    def __enter__(self) -> Flash:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        loop = shutil.which("mkfs.ext4") and Path("/dev/loop-control").exists()
        if self.kind != "tmpfs" and loop:
            try:
                with self.image.open("wb") as f:
                    f.truncate(self.size)  # sparse: costs nothing until written
                _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E",
                     "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(self.image))
                # mount -o loop sets the loop device to detach itself once unmounted
                _run("mount", "-o", "loop", str(self.image), str(self.mountpoint))
                self._mounted, self.counts_writes = True, True
                return self
            except LabError:
                self.__exit__()
                self.kind = "tmpfs"
        self.kind = "tmpfs"
        _run("mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs",
             str(self.mountpoint))
        self._mounted = True
        return self

    def usage(self) -> tuple[int, int]:
        """(bytes used, bytes total) of the filesystem."""
        st = os.statvfs(self.mountpoint)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize

    def __exit__(self, *exc: object) -> None:
        if self._mounted:
            # the daemons' private mount namespaces (ip netns exec) may linger a moment
            # after they exit: retry, then fall back to a lazy unmount
            deadline = time.monotonic() + 15
            while subprocess.run(["umount", str(self.mountpoint)], capture_output=True,
                                 timeout=60).returncode != 0:
                if time.monotonic() > deadline:
                    subprocess.run(["umount", "-l", str(self.mountpoint)],
                                   capture_output=True, timeout=60)
                    break
                time.sleep(0.2)
            self._mounted = False
        self.image.unlink(missing_ok=True)


def _own_cgroup(controller: str | None) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller is None and names == "") or (controller and controller in
                                                     names.split(",")):
            return path
    raise LabError(f"this process is in no {controller or 'v2'} cgroup")


class Cgroup:
    """Memory and CPU limits for the device's daemon (see the module docstring)."""

    def __init__(self, memory: int, cpu: float | None) -> None:
        self.memory = memory
        self.cpu = cpu
        self.name = f"csbs-{secrets.token_hex(3)}"
        self.dirs: list[Path] = []
        self.version = "none"
        self.problem: str | None = None

    def __enter__(self) -> Cgroup:
        root = Path("/sys/fs/cgroup")
        try:
            if (root / "cgroup.controllers").exists():
                self._setup_v2(root)
            elif (root / "memory").is_dir():
                self._setup_v1(root)
            else:
                raise LabError("no cgroup hierarchy found")
        except (LabError, OSError) as exc:
            self.problem = f"limits not imposed ({exc}); memory measured only"
            self.__exit__(None, None, None)
            self.dirs, self.version = [], "none"
        return self

    def _make(self, parent: Path) -> Path:
        path = parent / self.name
        path.mkdir()
        self.dirs.append(path)
        return path

    def _setup_v2(self, root: Path) -> None:
        parent = root / _own_cgroup(None).lstrip("/")
        group = self._make(parent)
        (group / "memory.max").write_text(str(self.memory))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        if self.cpu:
            (group / "cpu.max").write_text(f"{int(self.cpu * 100000)} 100000")
        self.version = "v2"

    def _setup_v1(self, root: Path) -> None:
        memory = self._make(root / "memory" / _own_cgroup("memory").lstrip("/"))
        (memory / "memory.limit_in_bytes").write_text(str(self.memory))
        if self.cpu:
            cpu = self._make(root / "cpu" / _own_cgroup("cpu").lstrip("/"))
            (cpu / "cpu.cfs_period_us").write_text("100000")
            (cpu / "cpu.cfs_quota_us").write_text(str(int(self.cpu * 100000)))
        self.version = "v1"

    def join(self) -> None:
        """Move the calling process in (run in the child before exec)."""
        for path in self.dirs:
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def describe(self) -> str:
        """One line for the report."""
        if self.version == "none":
            return self.problem or "not imposed"
        cpu = f", cpu {self.cpu:g} of one core" if self.cpu else ""
        return f"memory limit {self.memory >> 20} MiB{cpu} (cgroup {self.version})"

    def __exit__(self, exc_type: type[BaseException] | None = None,
                 exc: BaseException | None = None, tb: TracebackType | None = None) -> None:
        for path in reversed(self.dirs):
            try:
                path.rmdir()
            except OSError:
                pass
        self.dirs = []
