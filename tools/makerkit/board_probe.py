"""Board probe: measure a device and write a suggested board profile.

Theory of operation. Run on the device itself. It reads the RAM from
``/proc/meminfo``, the free and total space of the filesystem that will hold
the shares (``statvfs`` of ``--storage``) and whether it is flash (an
``mmcblk``/non-rotational block device), times SHA-256 and our rsync
signature over a buffer in memory (the CPU work of scanning and deltas), and
-- given ``--peer HOST:PORT`` of a sink started on another machine with
``board-probe --sink`` -- sends data over TCP for a few seconds to measure
the link. From those figures :func:`suggest` derives every limit of a
profile by stated rules (memory sizes by RAM, bytes in flight by link rate,
quota by free space, gzip and scan budget by hashing speed), and the result
is checked with csembed's own loader before it is written, so it passes
``csembed boards check``. The figures go into the file as comments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from csembed.board_profile import parse_board
from csembed.rsync import SignatureWriter

_MiB = 1 << 20


@dataclass(frozen=True)
class Measurements:
    """What the probe found on this device."""

    ram: int  #: bytes of RAM (MemTotal)
    ram_available: int  #: bytes available now (MemAvailable)
    storage_path: str
    storage_free: int  #: bytes free to an unprivileged user
    storage_total: int
    flash: bool  #: the storage is flash (SD/eMMC or non-rotational)
    sha256_rate: float  #: bytes per second
    signature_rate: float  #: bytes per second, rsync signature (our native code)
    cpus: int
    link_rate: float | None  #: bytes per second to the peer, if measured
    link_rtt: float | None  #: seconds for a TCP connect, if measured


def _meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * 1024
    return out


def _is_flash(path: Path) -> bool:
    dev = os.stat(path).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    try:
        real = sys_dev.resolve()
    except OSError:
        return False
    if "mmcblk" in str(real):
        return True
    for candidate in (real / "queue" / "rotational", real.parent / "queue" / "rotational"):
        if candidate.exists():
            return candidate.read_text().strip() == "0"
    return False


def _rate(work: int, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < 0.5:
        run()
        done += work
    return done / (time.perf_counter() - start)


def measure_link(peer: str, seconds: float) -> tuple[float, float]:
    """Send to a sink for ``seconds``; returns (bytes per second, connect seconds)."""
    host, _, port = peer.rpartition(":")
    started = time.perf_counter()
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as sock:
        rtt = time.perf_counter() - started
        block = os.urandom(64 * 1024)
        sent = 0
        begin = time.perf_counter()
        while time.perf_counter() - begin < seconds:
            sock.sendall(block)
            sent += len(block)
        sock.shutdown(socket.SHUT_WR)
        received = int(sock.makefile().readline() or 0)  # the sink's count, after all arrived
        elapsed = time.perf_counter() - begin
    return (received or sent) / elapsed, rtt


def run_sink(address: str) -> None:
    """Accept connections, count bytes until the sender shuts down, answer the count."""
    host, _, port = address.rpartition(":")
    with socket.create_server((host.strip("[]") or "0.0.0.0", int(port))) as server:
        print(f"board-probe sink listening on {server.getsockname()[0]}:"
              f"{server.getsockname()[1]}", flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                total = 0
                while chunk := conn.recv(1 << 16):
                    total += len(chunk)
                conn.sendall(f"{total}\n".encode())


def measure(storage: Path, peer: str | None, seconds: float) -> Measurements:
    """Take every measurement."""
    info = _meminfo()
    fs = os.statvfs(storage)
    buffer = os.urandom(4 * _MiB)
    sha = _rate(len(buffer), lambda: hashlib.sha256(buffer).digest())

    def sign() -> None:
        writer = SignatureWriter()
        writer.update(buffer)
        writer.finish()

    sig = _rate(len(buffer), sign)
    link_rate = link_rtt = None
    if peer:
        link_rate, link_rtt = measure_link(peer, seconds)
    return Measurements(info.get("MemTotal", 0), info.get("MemAvailable", 0), str(storage),
                        fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize,
                        _is_flash(storage), sha, sig, os.cpu_count() or 1, link_rate, link_rtt)


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", _MiB), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return str(n)


def _clamp(value: float, low: int, high: int) -> int:
    return int(min(max(value, low), high))


def suggest(m: Measurements, name: str) -> str:
    """A profile (TOML text) derived from the measurements."""
    small = m.ram < 512 * _MiB
    chunk = 64 * 1024 if small else 256 * 1024
    connections = 4 if small else 16
    # every connection's largest body, held and parsed, must fit in half the RAM
    # (board_profile's rule: max_message x max_connections x 16 <= ram)
    max_message = _MiB if small else 4 * _MiB
    while max_message > chunk and max_message * connections * 16 > m.ram:
        max_message //= 2
    # bytes in flight: about half a second of the link, within sane bounds
    in_flight = _clamp((m.link_rate or 2 * _MiB) * 0.5, 256 * 1024, 16 * _MiB)
    in_flight = (in_flight // 65536) * 65536
    reserve = _clamp(m.storage_total * 0.05, 32 * _MiB, 4 << 30)
    reserve = (reserve // _MiB) * _MiB
    quota = max(0, m.storage_free - reserve) // _MiB * _MiB
    max_file = min(quota, 4 << 30) if quota else 0
    rate = int((m.link_rate or 0) * 0.8) // 1000 * 1000
    slow_cpu = m.sha256_rate < 100 * _MiB
    text = f"""# Suggested by tools/board-probe on {time.strftime('%Y-%m-%d')}. Measured:
#   RAM {m.ram / _MiB:.0f} MiB ({m.ram_available / _MiB:.0f} MiB available), {m.cpus} CPU(s)
#   storage {m.storage_path}: {m.storage_free / _MiB:.0f} MiB free of \
{m.storage_total / _MiB:.0f} MiB, {'flash' if m.flash else 'not flash'}
#   SHA-256 {m.sha256_rate / _MiB:.0f} MiB/s, rsync signature {m.signature_rate / _MiB:.0f} MiB/s
#   link {f'{m.link_rate / 1e6:.2f} MB/s' if m.link_rate else 'not measured'}\
{f', connect {m.link_rtt * 1000:.1f} ms' if m.link_rtt else ''}
# Review every value; the rules are in tools/README.md.
[board]
name = "{name}"
description = "{name}: {m.ram / _MiB:.0f} MiB RAM, {quota / _MiB:.0f} MiB for shares"
ram = "{_size(m.ram // _MiB * _MiB) if m.ram >= 16 * _MiB else '16 MiB'}"

[memory]
chunk_size = "{_size(chunk)}"
io_buffer = "{_size(chunk)}"
max_message = "{_size(max_message)}"
max_bytes_in_flight = "{_size(in_flight)}"
max_open_transfers = {2 if small else 4}
max_connections = {connections}
max_handshakes = {64 if small else 128}
max_signature = "{_size(_MiB if small else 8 * _MiB)}"

[storage]
quota = "{_size(quota) if quota else '0'}"
max_file_size = "{_size(max_file) if max_file else '0'}"
free_space_reserve = "{_size(reserve)}"
write_policy = "{'flash' if m.flash or small else 'normal'}"
db_synchronous = "normal"
db_checkpoint_pages = {8000 if m.flash or small else 1000}
archive_size = "{_size(max(_MiB, quota // 32 // _MiB * _MiB)) if quota else '0'}"

[network]
upload_rate = "{rate}"
download_rate = "{rate}"
ping_interval = "{120 if small else 60} s"
lan_broadcast = true

[cpu]
gzip_level = {1 if slow_cpu else 3}
rsync_threshold = "128 KiB"
scan_interval = "{120 if slow_cpu else 60} s"
scan_budget = {0.05 if slow_cpu else 0.2}
"""
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/board-probe``."""
    p = argparse.ArgumentParser(
        prog="board-probe",
        description="Measure this device (RAM, free flash, hashing speed, link speed to a "
                    "sink) and write a suggested board profile that `csembed boards check` "
                    "accepts. For the link, first run `board-probe --sink HOST:PORT` on the "
                    "other machine.")
    p.add_argument("--name", default="my-board", help="board name (default my-board)")
    p.add_argument("--storage", type=Path, default=Path("."),
                   help="a folder on the filesystem that will hold the shares (default .)")
    p.add_argument("--peer", metavar="HOST:PORT", help="a board-probe sink to measure the link")
    p.add_argument("--seconds", type=float, default=3.0, help="link test length (3)")
    p.add_argument("--out", type=Path, help="write the profile here (default: print it)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON too")
    p.add_argument("--sink", metavar="HOST:PORT", help="run as the link-test sink instead")
    args = p.parse_args(argv)
    if args.sink:
        try:
            run_sink(args.sink)
        except KeyboardInterrupt:
            return 0
        except (OSError, ValueError) as exc:
            print(f"board-probe: sink on {args.sink}: {exc}", file=sys.stderr)
            return 2
    try:
        m = measure(args.storage, args.peer, args.seconds)
    except OSError as exc:
        print(f"board-probe: {exc}", file=sys.stderr)
        return 2
    text = suggest(m, args.name)
    import tomllib
    parse_board(tomllib.loads(text), str(args.out or "<suggested profile>"))  # must be valid
    if args.json:
        print(json.dumps(asdict(m), indent=2))
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    elif not args.json:
        print(text, end="")
    return 0
