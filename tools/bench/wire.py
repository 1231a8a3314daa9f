"""Benchmark the wire decoder and encoder against anchors measured in the same run.

* Payload: a stream of 1 MiB chunks fed in 64 KiB reads (as from a socket),
  in MB/s. Anchor: hashlib.sha256 over the same bytes, which every received
  file goes through anyway. Framing should cost much less than hashing.
  Pieces lying inside one read are handed out without a copy, which 64 KiB
  reads allow almost always; the same stream in 65518-byte reads (one secure
  session record each, misaligned with the chunks) and in 1460-byte reads
  (one TCP segment each, 44 fed per pull, so joined) shows the one-copy paths.
* Small messages: typical ~200-byte bodies fed in 4 KiB reads, in messages/s.
  Anchor: ``json.loads`` of the same bodies, the floor for any JSON decoder.
* Encoding: ``encode_message`` against ``json.dumps`` of the same bodies.

Usage: ``python tools/bench/wire.py [--mib 64] [--messages 50000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from functools import partial

from csembed.protocol.wire import (
    Decoder,
    Message,
    encode_chunk,
    encode_message,
    encode_payload_end,
)


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decode_pieces(pieces: list[bytes], batch: int = 1) -> int:
    """Feed ``batch`` pieces at a time, then pull every event."""
    decoder = Decoder()
    count = 0
    for index, piece in enumerate(pieces, 1):
        decoder.receive_data(piece)
        if index % batch == 0 or index == len(pieces):
            for _ in decoder.events():
                count += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="payload size (MiB)")
    ap.add_argument("--messages", type=int, default=50_000, help="small messages")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    args = ap.parse_args()

    data = os.urandom(args.mib << 20)
    stream = encode_message({"type": "directory.data", "sha256": "0" * 64}, payload=True)
    stream += b"".join(encode_chunk(data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20))
    stream += encode_payload_end()
    t_sha = best_time(lambda: hashlib.sha256(data).digest(), args.repeat)
    sha_mbs = len(data) / t_sha / 1e6
    payload_figures = []
    read_sizes = ((65536, 1, "64 KiB reads"), (65518, 1, "65518 B reads"),
                  (1460, 44, "1460 B reads x44"))
    for size, batch, label in read_sizes:
        reads = [stream[i : i + size] for i in range(0, len(stream), size)]
        t_wire = best_time(partial(decode_pieces, reads, batch), args.repeat)
        payload_figures.append((f"payload decode, {label}", len(data) / t_wire / 1e6))

    bodies = [
        {
            "type": "database.update",
            "path": f"recordings/take-{i:05d}.mid",
            "size": 3762440519426216896 + i,
            "mtime": "2014-03-30T12:35:29.113243778Z",
            "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
            "vclock": {"77b8065588ec32f95f598e93db6672ac": i},
        }
        for i in range(args.messages)
    ]
    raws = [encode_message(b) for b in bodies]
    texts = [json.dumps(b) for b in bodies]
    small = b"".join(raws)
    small_reads = [small[i : i + 4096] for i in range(0, len(small), 4096)]
    n = len(bodies)
    t_dec = best_time(lambda: decode_pieces(small_reads), args.repeat)
    t_loads = best_time(lambda: [json.loads(t) for t in texts], args.repeat)
    t_enc = best_time(lambda: [encode_message(b) for b in bodies], args.repeat)
    t_dumps = best_time(lambda: [json.dumps(b) for b in bodies], args.repeat)
    assert decode_pieces(small_reads) == n
    first = Decoder()
    first.receive_data(raws[0])
    assert isinstance(first.next_event(), Message)

    print(f"{'figure':<34}{'ours':>14}{'anchor':>14}  ratio  anchor")
    for label, wire_mbs in payload_figures:
        print(
            f"{label:<34}{wire_mbs:>10.0f} MB/s{sha_mbs:>9.0f} MB/s"
            f"  {wire_mbs / sha_mbs:5.2f}  hashlib.sha256"
        )
    print(
        f"{'small message decode':<34}{n / t_dec:>9.0f} msg/s{n / t_loads:>8.0f} msg/s"
        f"  {t_loads / t_dec:5.2f}  json.loads"
    )
    print(
        f"{'small message encode':<34}{n / t_enc:>9.0f} msg/s{n / t_dumps:>8.0f} msg/s"
        f"  {t_dumps / t_enc:5.2f}  json.dumps"
    )
    print(f"(average small message: {len(small) // n} bytes framed)")


if __name__ == "__main__":
    main()
