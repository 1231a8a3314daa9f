"""Soak: two daemons under a steady mix of edits for a long time, RSS over time.

Usage::

    python tools/bench/soak.py [--minutes 20] [--rate 2] [--sample 30] [--seed 1]

Opt-in (not run in CI). Two real ``csembed daemon`` processes on loopback
(desktop board, manual peers) share a folder seeded with 200 files. The
anchor is measured first, in the same run: both daemons' RSS at idle once
the first sync is done (the median of samples over ``--idle`` seconds).
Then, for ``--minutes``, ``--rate`` operations a second are applied at random
(seeded) to one side's own subtree -- modify, add, delete, rename, with sizes
from 100 B to 1 MB and now and then 4 MB -- each followed by a rescan
request, keeping each side's subtree near 150 files. Every ``--sample``
seconds a row gives both daemons' RSS beside their idle anchor, as a
ratio. At the end the edits stop and the trees must converge (exit status 1
if they do not within ``--settle`` seconds, or if a daemon died).

A steady RSS (ratio flat over time) is the goal; a ratio that keeps climbing
row after row is a leak. The machine's load is printed with each row, since
a shared machine slows everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import daemon as bench_daemon  # noqa: E402  (tools/bench/daemon.py: the daemon process)
from daemon import cli  # noqa: E402

MiB = 1 << 20
SUBTREE_FILES = 150


class Daemon(bench_daemon.Daemon):
    """A ``csembed daemon`` subprocess on the desktop board, with its RSS at hand."""

    def __init__(self, base: Path, name: str, *extra: str) -> None:
        self.name = name
        super().__init__(base, name, "desktop", *extra)

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self) -> bool:
        return self.proc.poll() is None


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.name.endswith(".!clearsky"):
            continue
        try:
            out[name] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            out[name] = "vanished"
    return out


class Editor:
    """Seeded edits to one side's own subtree (``a/`` or ``b/``)."""

    def __init__(self, root: Path, prefix: str, rng: random.Random) -> None:
        self.root = root
        self.prefix = prefix
        self.rng = rng
        self.counter = 0
        self.counts = {"modify": 0, "add": 0, "delete": 0, "rename": 0}

    def files(self) -> list[Path]:
        base = self.root / self.prefix
        return sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []

    def _size(self) -> int:
        return 4 * MiB if self.rng.random() < 0.02 else int(100 * 10_000 ** self.rng.random())

    def _new_path(self) -> Path:
        self.counter += 1
        return self.root / self.prefix / f"d{self.counter % 7}" / f"f{self.counter:06d}.bin"

    def step(self) -> str:
        files = self.files()
        weights = {"modify": 4, "add": 3, "delete": 2, "rename": 1}
        if len(files) < SUBTREE_FILES // 2:
            weights["add"] += 6
        if len(files) > SUBTREE_FILES:
            weights["delete"] += 6
        if not files:
            weights = {"add": 1}
        action = self.rng.choices(list(weights), list(weights.values()))[0]
        if action in ("modify", "add"):
            path = self.rng.choice(files) if action == "modify" else self._new_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.rng.randbytes(self._size()))
        elif action == "delete":
            self.rng.choice(files).unlink()
        else:
            new = self._new_path()
            new.parent.mkdir(parents=True, exist_ok=True)
            self.rng.choice(files).rename(new)
        self.counts[action] += 1
        return action


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="soak length (default 20)")
    parser.add_argument("--rate", type=float, default=2.0, help="operations per second")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS rows")
    parser.add_argument("--idle", type=float, default=20.0, help="idle anchor window, seconds")
    parser.add_argument("--settle", type=float, default=300.0,
                        help="seconds allowed for the trees to converge at the end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the series as JSON")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="cssoak", dir="/tmp"))
    daemons: list[Daemon] = []
    try:
        a = Daemon(base, "a")
        daemons.append(a)
        b = Daemon(base, "b", "--peer", a.address)
        daemons.append(b)
        pa, pb = base / "A", base / "B"
        edit_a, edit_b = Editor(pa, "a", rng), Editor(pb, "b", rng)
        pa.mkdir()
        for _ in range(200):
            edit_a.step()
        code = json.loads(cli(a.data, "share", str(pa), "--json"))["access_code"]
        cli(b.data, "attach", code, str(pb), "--json", "--timeout", "120")
        cli(a.data, "config", "peers", json.dumps([b.address]))
        settle(a, b, pa, pb, 300.0)

        print(f"csembed soak: {args.minutes:g} min at {args.rate:g} ops/s, seed {args.seed}; "
              f"CSEMBED_BACKEND={os.environ.get('CSEMBED_BACKEND', 'auto')}; load {load()}")
        samples: list[tuple[int, int]] = []
        end = time.monotonic() + args.idle
        while time.monotonic() < end:
            samples.append((a.rss(), b.rss()))
            time.sleep(1.0)
        anchor_a = int(statistics.median(s[0] for s in samples))
        anchor_b = int(statistics.median(s[1] for s in samples))
        print(f"anchor (idle after first sync, median over {args.idle:g} s): "
              f"A {anchor_a / MiB:.1f} MiB, B {anchor_b / MiB:.1f} MiB\n")
        print(f"  {'min':>6} {'ops':>6} {'RSS A':>10} {'A/idle':>7} {'RSS B':>10} {'B/idle':>7}"
              f"  {'load':>14}")
        series = []
        started = time.monotonic()
        next_sample = started
        ops = 0
        while (now := time.monotonic()) < started + args.minutes * 60:
            if not (a.alive() and b.alive()):
                raise SystemExit("a daemon died during the soak; see its log in " + str(base))
            if now >= next_sample:
                ra, rb = a.rss(), b.rss()
                series.append({"minutes": (now - started) / 60, "ops": ops, "rss_a": ra,
                               "rss_b": rb})
                print(f"  {(now - started) / 60:6.1f} {ops:6d} {ra / MiB:8.1f}Mi "
                      f"{ra / anchor_a:6.2f}x {rb / MiB:8.1f}Mi {rb / anchor_b:6.2f}x  {load()}",
                      flush=True)
                next_sample += args.sample
            editor, daemon = (edit_a, a) if rng.random() < 0.5 else (edit_b, b)
            editor.step()
            ops += 1
            daemon.call("rescan", path=str(editor.root))
            time.sleep(max(0.0, started + ops / args.rate - time.monotonic()))

        converged = settle(a, b, pa, pb, args.settle)
        ra, rb = a.rss(), b.rss()
        peak_a = max(s["rss_a"] for s in series)
        peak_b = max(s["rss_b"] for s in series)
        print(f"\n  {'':<28} {'A':>10} {'B':>10}")
        print(f"  {'idle anchor':<28} {anchor_a / MiB:8.1f}Mi {anchor_b / MiB:8.1f}Mi")
        print(f"  {'peak during soak':<28} {peak_a / MiB:8.1f}Mi {peak_b / MiB:8.1f}Mi")
        print(f"  {'after settling':<28} {ra / MiB:8.1f}Mi {rb / MiB:8.1f}Mi")
        print(f"  {'after settling / idle':<28} {ra / anchor_a:9.2f}x {rb / anchor_b:9.2f}x")
        print(f"  operations: A {edit_a.counts}, B {edit_b.counts}; "
              f"files now {len(tree(pa))}; converged: {converged}")
        if args.json:
            print(json.dumps({"anchor": [anchor_a, anchor_b], "series": series,
                              "final": [ra, rb], "converged": converged}))
        return 0 if converged else 1
    finally:
        for daemon in daemons:
            daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


def settle(a: Daemon, b: Daemon, pa: Path, pb: Path, timeout: float) -> bool:
    """Rescan both sides until their trees agree; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pb.exists() and tree(pa) == tree(pb):
            return True
        a.call("rescan", path=str(pa))
        if pb.exists():
            b.call("rescan", path=str(pb))
        time.sleep(2.0)
    return False


if __name__ == "__main__":
    sys.exit(main())
