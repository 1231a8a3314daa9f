"""Benchmark: how long a short file waits when it is saved while a big one is on its way.

Usage::

    python tools/bench/small_behind_big.py [--quick] [--big-mib 64] [--rate "4 MB/s"]
                                           [--bigs 1] [--csembed-root DIR]

Two real ``csembed daemon`` processes on loopback, both on the desktop board;
A's upload is limited to ``--rate`` (a slow link). A holds ``--bigs`` big
files of ``--big-mib`` MiB; B attaches; once B has received a little of the
big ones, a short file (30 kB) is saved on A. Measured: seconds from that
save to the short file complete on B, and how much of the big files B held
at that moment. Anchor, in the same run with the same daemons: the same
short file saved again once the link is idle -- what the user would wait
with nothing else moving. The ratio says what the big transfer costs the
short one (1.0: nothing). Before this was fixed the short file waited for
the big ones to finish (seconds ~ their size / rate).

Then **bulk**: the big files' own time beside their size / rate (the
smaller pieces the fetcher asks for must not slow a big file down);
``--rate 0`` lifts the limit (the time is then printed with the rate).

``--csembed-root DIR`` runs the daemons from another checkout (for
before/after figures; copy the built ``csembed/_native*.so`` into it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon import Daemon, cli, row, wait  # noqa: E402  (tools/bench/daemon.py)

from csembed.units import parse_size  # noqa: E402

SMALL = 30_000


def held(folder: Path, names: list[str]) -> int:
    """Bytes of these files B holds (finished or partial)."""
    total = 0
    for name in names:
        for path in (folder / name, *folder.glob(f".{name}.*.!clearsky")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # renamed into place meanwhile
                pass
    return total


def landed(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def run(base: Path, big_bytes: int, bigs: int, rate: str) -> dict[str, float]:
    src, dst = base / "A", base / "B"
    src.mkdir()
    names = [f"concert{i}.wav" for i in range(bigs)]
    for name in names:
        (src / name).write_bytes(os.urandom(big_bytes))
    a = Daemon(base, "a", "desktop")
    b = Daemon(base, "b", "desktop", "--peer", a.address)
    try:
        cli(a.data, "config", "upload_limit", rate)
        code = json.loads(cli(a.data, "share", str(src), "--json"))["access_code"]
        started = time.monotonic()
        cli(b.data, "attach", code, str(dst))
        total = bigs * big_bytes
        wait(lambda: held(dst, names) > min(total // 20, 4 << 20), "B to start on the big ones",
             interval=0.05)
        saved = time.monotonic()
        (src / "scale.wav").write_bytes(os.urandom(SMALL))
        wait(lambda: landed(dst / "scale.wav", SMALL), "the short file", interval=0.02)
        busy = time.monotonic() - saved
        fraction = held(dst, names) / total
        wait(lambda: all(landed(dst / n, big_bytes) for n in names), "the big files",
             interval=0.1)
        bulk = time.monotonic() - started
        saved = time.monotonic()
        (src / "scale2.wav").write_bytes(os.urandom(SMALL))
        wait(lambda: landed(dst / "scale2.wav", SMALL), "the short file (idle)",
             interval=0.02)
        idle = time.monotonic() - saved
    finally:
        a.stop()
        b.stop()
    return {"busy": busy, "idle": idle, "fraction": fraction, "bulk": bulk,
            "bytes": total, "limit": parse_size(rate.removesuffix("/s").strip())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB instead of 64")
    parser.add_argument("--big-mib", type=int, default=64)
    parser.add_argument("--bigs", type=int, default=1, help="big files sent at once")
    parser.add_argument("--rate", default="4 MB/s", help="A's upload limit")
    parser.add_argument("--csembed-root", help="run the daemons from this checkout")
    args = parser.parse_args()
    if args.csembed_root:  # ``python -m`` looks in the working directory first
        os.environ["PYTHONPATH"] = str(Path(args.csembed_root).resolve())
        os.chdir(args.csembed_root)
    big = (16 if args.quick else args.big_mib) << 20
    with tempfile.TemporaryDirectory(prefix="csbig", dir="/tmp") as tmp:
        got = run(Path(tmp), big, args.bigs, args.rate)
    print(f"\n{args.bigs} x {big >> 20} MiB on their way at {args.rate}, then a "
          f"{SMALL // 1000} kB file saved")
    row("", "csembed", "idle link", "ratio")
    row("short file: seconds to land", f"{got['busy']:.2f} s", f"{got['idle']:.2f} s",
        f"{got['busy'] / got['idle']:.2f}x")
    row("big files held when it landed", f"{got['fraction'] * 100:.0f}%", "", "")
    if got["limit"]:
        ideal = got["bytes"] / got["limit"]
        row("", "csembed", "size / rate", "ratio")
        row("big files: seconds to land", f"{got['bulk']:.1f} s", f"{ideal:.1f} s",
            f"{got['bulk'] / ideal:.2f}x")
    else:
        row("big files: seconds from attach", f"{got['bulk']:.1f} s",
            f"{got['bytes'] / got['bulk'] / 1e6:.0f} MB/s", "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
