"""Benchmark the native primitives against their pure twins and hashlib, in one run.

Prints MB/s (best of several runs) for the weak sums (one-shot and rolling)
and the strong hashes, for the C and the pure-Python backend, with the anchor
``hashlib.blake2b(digest_size=32)`` measured on the same data in the same
process, and the ratios the targets are stated in (plus the four-way BLAKE2b that
signature generation uses):
C BLAKE2b >= 0.8x hashlib, C rolling sums >= 500 MB/s.

Usage: ``python tools/bench/native.py [--mib 64] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from _timing import best_time

from csembed.native import available_backends, get_backend


def best_rate(fn: Callable[[], object], nbytes: int, repeat: int) -> float:
    """Best throughput in MB/s (10^6 bytes per second) over ``repeat`` runs."""
    return nbytes / best_time(fn, repeat) / 1e6


def roll(cls: Any, view: memoryview, window: int) -> None:
    """Slide a ``window``-byte weak sum across the whole buffer with one bulk call."""
    s = cls(view[:window])
    s.roll(view[: len(view) - window], view[window:])


def blake2b_x4(data: bytes, block: int) -> None:
    """Hash data as blocks, four at a time, with the multi-buffer C BLAKE2b."""
    from csembed._native import ffi, lib

    src = ffi.from_buffer("uint8_t[]", data)
    outs = [ffi.new("uint8_t[32]") for _ in range(4)]
    for off in range(0, len(data) - 4 * block + 1, 4 * block):
        lib.cs_blake2b_x4([src + off + i * block for i in range(4)], block, 32, outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="data size for the C backend (MiB)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    args = ap.parse_args()
    big = os.urandom(args.mib << 20)
    small = big[: 1 << 20]  # pure Python gets 1 MiB (BLAKE2b/MD4 only 64 KiB)
    tiny = big[: 64 << 10]
    window = 2048

    anchor = best_rate(lambda: hashlib.blake2b(big, digest_size=32).digest(), len(big),
                       args.repeat)
    rows: list[tuple[str, str, float, str]] = []
    for name in available_backends():
        mod = get_backend(name)
        data = big if name == "c" else small
        hdata = big if name == "c" else tiny
        rep = args.repeat if name == "c" else 1
        for kind, fn in (("rollsum", mod.rollsum), ("rabinkarp", mod.rabinkarp)):
            rate = best_rate(partial(fn, data), len(data), rep)
            rows.append((name, f"{kind} one-shot", rate, ""))
        for kind in ("RollSum", "RabinKarp"):
            rate = best_rate(partial(roll, getattr(mod, kind), memoryview(data), window),
                             len(data) - window, rep)
            rows.append((name, f"{kind} rolling", rate, "target >= 500" if name == "c" else ""))
        rate = best_rate(partial(mod.blake2b, hdata, 32), len(hdata), rep)
        target = " (target >= 0.80x)" if name == "c" else ""
        rows.append((name, "blake2b-256", rate, f"{rate / anchor:.3f}x hashlib{target}"))
        rate = best_rate(partial(mod.md4, hdata), len(hdata), rep)
        rows.append((name, "md4", rate, ""))

    if "c" in available_backends():
        rate = best_rate(partial(blake2b_x4, big, 16384), len(big) // 65536 * 65536, args.repeat)
        rows.append(("c", "blake2b-256 x4", rate,
                     f"{rate / anchor:.3f}x hashlib (4 blocks of 16 KiB per call, signatures)"))

    print(f"{'backend':8} {'primitive':20} {'MB/s':>10}  note")
    print(f"{'anchor':8} {'hashlib blake2b-256':20} {anchor:10.1f}")
    for backend, what, rate, note in rows:
        print(f"{backend:8} {what:20} {rate:10.1f}  {note}")


if __name__ == "__main__":
    main()
