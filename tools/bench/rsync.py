"""Benchmark csembed's rsync engine against ``rdiff`` (librsync) on the same files, same run.

Generates (once, cached in ``--dir``) a random ``old`` file of ``--mib`` MiB
(default 256), a ``new`` with about 1% of its bytes changed in runs plus 8
inserts and 8 deletes, and a ``flip`` where 1% of the bytes are isolated
flips so that no block matches. Then, for each scenario, alternates
``rdiff`` and csembed ``--repeat`` times and prints best/median MB/s (of the
new file's size; of the basis for signatures), the ratio ours/rdiff, and
peak RSS.

Fairness: before every run, dirty pages are flushed (``os.sync``) so that
writeback of an earlier run's output does not slow a later one. Each run of
ours is a separate Python process doing one library
call (:func:`csembed.rsync.signature_file` and friends, output fsync off as
rdiff never syncs); its time is measured inside the process around that call
only, so interpreter start-up and imports are excluded, while rdiff's time
is its whole process (its start-up is about a millisecond). Peak RSS of both
comes from ``wait4``; for ours the RSS of an idle interpreter with csembed
imported is printed too, and the difference (what the operation itself
costs) is shown as ``+op``.

Targets: signature and delta at least as fast as rdiff on ``new``, delta at
least 2x rdiff on ``flip``, patch within 0.8x, delta memory at most 2x.

Usage: ``python tools/bench/rsync.py [--mib 256] [--repeat 3] [--dir /tmp/csembed-bench]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SEED = 20240601


@dataclass
class Run:
    seconds: float
    rss_kib: int


def generate(workdir: Path, mib: int) -> None:
    """Create old/new/flip in workdir unless they exist for this size and seed."""
    stamp = workdir / "stamp.json"
    want = {"mib": mib, "seed": SEED}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(SEED)
    size = mib << 20
    old = b"".join(rnd.randbytes(16 << 20) for _ in range(size >> 24)) + rnd.randbytes(
        size & ((16 << 20) - 1))
    (workdir / "old").write_bytes(old)
    new = bytearray(old)
    changed = 0
    while changed < size // 100:  # 1% of bytes overwritten, in runs of 1..8 KiB
        run = rnd.randint(1, 8192)
        at = rnd.randrange(len(new) - run)
        new[at:at + run] = rnd.randbytes(run)
        changed += run
    for _ in range(8):
        at = rnd.randrange(len(new))
        new[at:at] = rnd.randbytes(rnd.randint(1, 4096))
        at = rnd.randrange(len(new))
        del new[at:at + rnd.randint(1, 4096)]
    (workdir / "new").write_bytes(new)
    del new
    flip = bytearray(old)
    flip[::100] = bytes(b ^ 0xFF for b in old[::100])  # 1% isolated byte flips
    (workdir / "flip").write_bytes(flip)
    stamp.write_text(json.dumps(want))


GNU_TIME = Path("/usr/bin/time")


def wait_rusage(cmd: list[str], workdir: Path) -> tuple[float, int, bytes]:
    """Run cmd; return (wall seconds, peak RSS KiB, stdout), raising on failure.

    Linux carries the pre-exec memory of the spawning process into a child's
    ``ru_maxrss``, so measured directly from this (large) Python process every
    child would look at least as big as we are. GNU time, a small C program,
    forks the command itself and reports its true peak; without it we fall
    back to ``wait4`` and the figures are upper bounds.
    """
    report = workdir / "rss.txt"
    wrapped = [str(GNU_TIME), "-f", "%M", "-o", str(report), *cmd] if GNU_TIME.exists() else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(wrapped, stdout=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{cmd} exited with {os.waitstatus_to_exitcode(status)}")
    rss = int(report.read_text().split()[-1]) if GNU_TIME.exists() else usage.ru_maxrss
    return elapsed, rss, out


def run_rdiff(args: list[str], workdir: Path) -> Run:
    seconds, rss, _ = wait_rusage(["rdiff", "-f", *args], workdir)
    return Run(seconds, rss)


def run_ours(op: str, args: list[str], workdir: Path) -> Run:
    _, rss, out = wait_rusage([sys.executable, __file__, "--worker", op, *args], workdir)
    return Run(json.loads(out)["seconds"], rss)


def worker(op: str, args: list[str]) -> None:
    """One library call in this process; print its duration as JSON."""
    from csembed import rsync

    t0 = time.perf_counter()
    if op == "signature":
        block = int(args[2]) if len(args) > 2 else 0
        rsync.signature_file(args[0], args[1], block_len=block, fsync=False)
    elif op == "delta":
        rsync.delta_file(args[0], args[1], args[2], fsync=False)
    elif op == "patch":
        rsync.patch_file(args[0], args[1], args[2], fsync=False)
    elif op == "generate":
        generate(Path(args[0]), int(args[1]))
        return
    elif op != "idle":
        raise SystemExit(f"unknown worker op {op}")
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def same_file(a: Path, b: Path) -> bool:
    """Compare two files in chunks (keeps this process small)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def measure(label: str, nbytes: int, rdiff_args: list[str], op: str, our_args: list[str],
            repeat: int, idle_kib: int, workdir: Path, cleanup: list[Path]) -> list[str]:
    theirs: list[Run] = []
    ours: list[Run] = []
    for _ in range(repeat):
        for who, fn in (("rdiff", lambda: run_rdiff(rdiff_args, workdir)),
                        ("ours", lambda: run_ours(op, our_args, workdir))):
            for p in cleanup:
                p.unlink(missing_ok=True)
            os.sync()  # no writeback of earlier runs' output may land in this one
            (theirs if who == "rdiff" else ours).append(fn())

    def rate(runs: list[Run]) -> tuple[float, float]:
        speeds = [nbytes / r.seconds / 1e6 for r in runs]
        return max(speeds), statistics.median(speeds)

    (tb, tm), (ob, om) = rate(theirs), rate(ours)
    t_rss = max(r.rss_kib for r in theirs) / 1024
    o_rss = max(r.rss_kib for r in ours) / 1024
    return [f"{label:34} {tb:7.0f} {tm:7.0f}   {ob:7.0f} {om:7.0f}   {ob / tb:5.2f}x "
            f"{om / tm:5.2f}x   {t_rss:6.1f} {o_rss:6.1f} (+op {o_rss - idle_kib / 1024:5.1f})"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="size of the basis in MiB")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool per scenario")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/csembed-bench"),
                    help="work directory (data is cached there)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1:])
        return
    d: Path = args.dir
    # Generate in a child so this process stays small while it spawns the others.
    subprocess.run([sys.executable, __file__, "--worker", "generate", str(d), str(args.mib)],
                   check=True)
    old, new, flip = d / "old", d / "new", d / "flip"
    size = old.stat().st_size
    _, idle_kib, _ = wait_rusage([sys.executable, __file__, "--worker", "idle"], d)
    from csembed.native import BACKEND

    print(f"basis {size >> 20} MiB; new = 1% changed in runs + 8 inserts + 8 deletes; "
          f"flip = 1% isolated byte flips; backend {BACKEND}; best of {args.repeat}")
    print(f"{'':34} {'rdiff MB/s':>15}   {'csembed MB/s':>15}   {'ours/rdiff':>12}   "
          f"{'peak RSS MiB (rdiff, ours)':>26}")
    print(f"{'':34} {'best':>7} {'median':>7}   {'best':>7} {'median':>7}   {'best':>5}  "
          f"{'med':>5}")
    out = d / "out"
    rows: list[str] = []
    for tag, bflag in (("default", []), ("-b 2048", ["-b", "2048"])):
        sig_r, sig_o = d / f"sig{tag[-4:]}.rdiff", d / f"sig{tag[-4:]}.ours"
        rows += measure(f"signature ({tag})", size, [*bflag, "signature", str(old), str(sig_r)],
                        "signature", [str(old), str(sig_o), *bflag[1:]], args.repeat, idle_kib,
                        d, [])
        if not same_file(sig_r, sig_o):
            raise SystemExit("signatures differ!")
        for name, path in (("new", new), ("flip", flip)):
            delta_r = d / f"delta-{name}{tag[-4:]}.rdiff"
            delta_o = d / f"delta-{name}{tag[-4:]}.ours"
            rows += measure(f"delta {name} ({tag} sig)", path.stat().st_size,
                            ["delta", str(sig_r), str(path), str(delta_r)], "delta",
                            [str(sig_r), str(path), str(delta_o)], args.repeat, idle_kib, d, [])
            if tag == "default":
                rows.append(f"{'  delta size (rdiff, ours)':34} {delta_r.stat().st_size:>15} "
                            f"  {delta_o.stat().st_size:>15}")
                rows += measure(f"patch {name}", path.stat().st_size,
                                ["patch", str(old), str(delta_r), str(out)], "patch",
                                [str(old), str(delta_r), str(out)], args.repeat, idle_kib,
                                d, [out])
                if not same_file(out, path):
                    raise SystemExit("patch output differs!")
        for row in rows:
            print(row)
        rows = []
    print(f"idle interpreter with csembed imported: {idle_kib / 1024:.1f} MiB RSS "
          f"({'GNU time' if GNU_TIME.exists() else 'wait4, upper bounds'})")


if __name__ == "__main__":
    main()
