"""``csembed demo``: a Wi-Fi piano syncs its saved recordings to a laptop, for real.

Everything happens on this machine, on loopback, in a temporary folder that
is removed afterwards: a ``csembed tracker`` and two ``csembed daemon``
processes are started -- the *piano* with the ``wifi-piano`` board profile
(1 MB/s each way, 4 connections, 2 transfers) and the *laptop* with
``desktop`` -- and driven with the same CLI commands a person would type,
which are shown with their output:

1. the piano shares its folder of saved takes (small MIDI files generated on
   the spot) and prints a one-time access code;
2. the laptop attaches with that code, finds the piano through the tracker,
   receives the share's keys and downloads the takes (progress shown);
3. a new take recorded on the piano arrives on the laptop, and a take
   renamed on the laptop is renamed on the piano;
4. both daemons and the tracker are stopped, whatever happened.

The demo checks what it shows (both folders end up identical, file by file)
and exits 1 if anything did not work. It doubles as an end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csembed.cli_commands.control_client import ControlClient

STEP_TIMEOUT = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo", help="watch a Wi-Fi piano sync its recordings to a laptop (on loopback)",
        description="Start a tracker and two daemons on loopback -- a Wi-Fi piano and a "
                    "laptop -- share the piano's recordings with an access code, sync, edit "
                    "on both sides, and stop everything.")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary folder (logs, data) and print its path")
    p.set_defaults(handler=run)


def recording(seed: int, notes: int) -> bytes:
    """A small Standard MIDI File: one track of ``notes`` note-on/off pairs."""
    rng = random.Random(seed)
    track = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20")  # tempo 500000 us per quarter note
    for _ in range(notes):
        key, velocity = rng.randrange(36, 96), rng.randrange(40, 127)
        track += bytes((rng.randrange(0, 100), 0x90, key, velocity))
        track += bytes((rng.randrange(20, 120), 0x80, key, 0))
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + b"\x00\x00\x00\x01\x01\xe0"
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def _tree(root: Path) -> dict[str, str]:
    """Name -> SHA-256 of each file; a download in progress or a file renamed
    while being read counts as unfinished, so a tree mid-change never matches."""
    out = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name.endswith(".!clearsky"):
            out[name] = "partial"
            continue
        try:
            if path.is_file():
                out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            out[name] = "vanished"
    return out


class _Demo:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []

    # -- processes

    def spawn(self, name: str, *args: str) -> str:
        log = (self.base / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "csembed", *args],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        self.procs.append((name, proc))
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], STEP_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"{name} did not start; see {self.base / (name + '.log')}")
        return line.strip()

    def csembed(self, who: str, *args: str, show: bool = True) -> str:
        data = self.base / f"{who}-data"
        if show:
            shown = " ".join(a if " " not in a else repr(a) for a in args)
            print(f"  {who}$ csembed {shown}")
        result = subprocess.run([sys.executable, "-m", "csembed", *args, "--data-dir",
                                 str(data)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"csembed {' '.join(args)} failed: {result.stderr.strip()}")
        if show:
            for line in result.stdout.rstrip("\n").splitlines():
                print(f"    {line}")
        return result.stdout

    def call(self, who: str, command: str, **params: Any) -> dict[str, Any]:
        with ControlClient(self.base / f"{who}-data" / "control", timeout=30) as client:
            return client.call(command, **params)

    def wait(self, predicate: Callable[[], bool], what: str,
             progress: Callable[[], None] | None = None) -> float:
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > STEP_TIMEOUT:
                raise RuntimeError(f"timed out waiting for {what}")
            if progress is not None:
                progress()
            time.sleep(0.1)
        return time.monotonic() - started

    def stop_all(self) -> None:
        for who in ("laptop", "piano"):
            with contextlib.suppress(Exception):
                self.call(who, "stop")
        for name, proc in reversed(self.procs):
            if name == "tracker" and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            if proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="csdemo", dir="/tmp" if os.path.isdir("/tmp")
                                 else None))
    demo = _Demo(base)
    ok = False
    started = time.monotonic()
    try:
        ok = _scenario(demo, base)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        print(f"\nthe demo failed: {exc}")
        for name, _ in demo.procs:
            log = base / f"{name}.log"
            if log.exists():
                print(f"--- last lines of the {name}'s log")
                print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    finally:
        print("\n5. Stopping the daemons and the tracker")
        demo.stop_all()
        if args.keep:
            print(f"   kept {base} (logs: *.log)")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'done' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


def _scenario(demo: _Demo, base: Path) -> bool:
    piano_dir = base / "piano" / "Saved recordings"
    laptop_dir = base / "laptop" / "Piano recordings"
    piano_dir.mkdir(parents=True)
    laptop_dir.parent.mkdir(parents=True)
    takes = {"2026-11-21 nocturne.mid": 900, "2026-11-24 scales.mid": 300,
             "2026-11-27 improvisation.mid": 2500, "2026-11-28 for the lesson.mid": 1200}
    for i, (name, notes) in enumerate(takes.items()):
        (piano_dir / name).write_bytes(recording(i, notes))
    # one bounced audio take, big enough to watch the piano's 1 MB/s limit at work
    bounce = random.Random(7).randbytes(3 << 20)
    (piano_dir / "2026-11-28 recital bounce.wav").write_bytes(b"RIFF" + bounce)

    print("1. Starting a tracker and two daemons on loopback")
    tracker = demo.spawn("tracker", "tracker", "--listen", "127.0.0.1:0").rsplit(" ", 1)[1]
    print(f"   tracker on {tracker}")
    for who, board in (("piano", "wifi-piano"), ("laptop", "desktop")):
        line = demo.spawn(who, "daemon", "--data-dir", str(base / f"{who}-data"), "--board",
                          board, "--listen", "127.0.0.1:0", "--tracker", tracker, "--no-lan")
        print(f"   {who:<6} ({board} board): {line.split('ready: ', 1)[1].split(',')[0]}")

    size = sum(p.stat().st_size for p in piano_dir.iterdir())
    count = len(list(piano_dir.iterdir()))
    print(f"\n2. The piano shares its {count} saved takes ({size:,} bytes)")
    out = demo.csembed("piano", "share", str(piano_dir))
    lines = out.splitlines()
    code = next(lines[i + 1].strip() for i, line in enumerate(lines)
                if line.startswith("access code"))

    print("\n3. The laptop attaches with the code and downloads the takes")
    demo.csembed("laptop", "attach", code, str(laptop_dir))
    last = [""]

    def progress() -> None:
        status = demo.call("laptop", "status_detail")
        for share in status["shares"]:
            if share.get("transfers"):
                line = ", ".join(f"{t['key'].rsplit('/', 1)[-1]}: {t['done']:,} of "
                                 f"{t['total']:,} bytes" for t in share["transfers"])
                if line != last[0]:
                    print(f"   … {line}")
                    last[0] = line

    took = demo.wait(lambda: _tree(laptop_dir) == _tree(piano_dir), "the takes to arrive",
                     progress)
    print(f"   all {count} takes arrived {took:.1f} s after joining, byte for byte")
    demo.csembed("laptop", "list")

    print("\n4. Edits on each side")
    new_take = "2026-11-28 evening practice.mid"
    (piano_dir / new_take).write_bytes(recording(99, 1800))
    print(f"   the piano records '{new_take}'")
    demo.csembed("piano", "rescan", str(piano_dir))
    took = demo.wait(lambda: (laptop_dir / new_take).exists() and _tree(laptop_dir).get(
        new_take) == _tree(piano_dir).get(new_take), "the new take to reach the laptop")
    print(f"   … it is on the laptop {took:.1f} s later")
    old, new = "2026-11-27 improvisation.mid", "2026-11-27 improvisation (keep!).mid"
    (laptop_dir / old).rename(laptop_dir / new)
    print(f"   on the laptop, '{old}' is renamed to '{new}'")
    demo.csembed("laptop", "rescan", str(laptop_dir))
    took = demo.wait(lambda: (piano_dir / new).exists() and not (piano_dir / old).exists(),
                     "the rename to reach the piano")
    print(f"   … the piano has the new name {took:.1f} s later")
    demo.wait(lambda: _tree(laptop_dir) == _tree(piano_dir), "both sides to agree")
    print("\n   The piano's view (board limits in force, peers, progress):")
    demo.csembed("piano", "status")
    same = _tree(laptop_dir) == _tree(piano_dir)
    print(f"\n   piano and laptop hold the same {len(_tree(piano_dir))} files: "
          f"{'yes' if same else 'NO'}")
    return same
