"""Benchmark: what gzip costs the sender, adaptive against always-deflate and gzip off.

The sender's per-chunk work on a session is: the chunk header, the gzip
frame (when negotiated), and sealing in libsodium secretstream records of
64 KiB. This times exactly that, in CPU seconds per 64 MiB, for

* **off**: header + seal (no gzip extension);
* **adaptive**: :class:`GzipEncoder` as csembed sends (stored blocks for
  what does not compress);
* **deflate**: the same encoder with ``adaptive=False`` (every unit deflated
  at the level, which is what any plain zlib sender does);

on random bytes (must cost at most 5 % over off) and on text (must compress
as well as deflate does). Rounds are interleaved and the best of each kept,
so load from other processes hits all alike.

Usage: ``python tools/bench/gzip_adaptive.py [--mib 64] [--level 6] [--chunk 1048576]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nacl.bindings as sodium

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from csembed.protocol.gzip_stream import GzipEncoder  # noqa: E402
from csembed.protocol.wire import encode_chunk_header  # noqa: E402

RECORD = 64 * 1024


def sealer() -> Callable[[bytes], int]:
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)

    def seal(data: bytes) -> int:
        out = 0
        view = memoryview(data)
        for at in range(0, len(view), RECORD):
            out += len(sodium.crypto_secretstream_xchacha20poly1305_push(
                state, bytes(view[at:at + RECORD])))
        return out
    return seal


def run(mode: str, chunks: list[bytes], level: int) -> tuple[float, int]:
    seal = sealer()
    encoder = None if mode == "off" else GzipEncoder(level, adaptive=mode == "adaptive")
    wire = 0
    started = time.process_time()
    for i, chunk in enumerate(chunks):
        if i % 16 == 0:  # a message before every 16 chunks, as a file header would be
            message = b'{"type":"directory.data","path":"/f%d"}\n' % i
            wire += seal(message if encoder is None else encoder.encode(message))
        header = encode_chunk_header(len(chunk))
        if encoder is None:
            wire += seal(header + chunk)
        else:
            wire += seal(encoder.encode(header, chunk))
    return time.process_time() - started, wire


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--level", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = args.mib << 20
    random_chunks = [os.urandom(args.chunk) for _ in range(total // args.chunk)]
    line = b"%08d the quick brown fox jumps over the lazy dog; practice the left hand\n"
    text = b"".join(line % i for i in range(args.chunk // len(line) + 1))[:args.chunk]
    text_chunks = [text] * (total // args.chunk)
    print(f"sender CPU for {args.mib} MiB in {args.chunk // 1024} KiB chunks, gzip level "
          f"{args.level}, best of {args.repeat}; load average {os.getloadavg()[0]:.2f}")
    for name, chunks in (("random", random_chunks), ("text", text_chunks)):
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeat):
            for mode in ("off", "adaptive", "deflate"):
                seconds, wire = run(mode, chunks, args.level)
                if mode not in best or seconds < best[mode][0]:
                    best[mode] = (seconds, wire)
        off = best["off"][0]
        print(f"\n{name}:")
        print(f"  {'':<10} {'CPU s':>8} {'vs off':>8} {'wire MiB':>9}")
        for mode, (seconds, wire) in best.items():
            print(f"  {mode:<10} {seconds:>8.3f} {seconds / off:>7.2f}x {wire / (1 << 20):>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
