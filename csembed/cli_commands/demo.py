"""``csembed demo``: a short, real tour of what csembed does so far.

Everything shown is computed on the spot, nothing is canned: the piano's board
profile is loaded and validated, an access code is generated and read back
the forgiving way a person would type it, a saved "recording" is hashed with
the native weak sums and BLAKE2b, and a file-data message is framed and then
decoded from a stream cut into small pieces, the way it arrives over Wi-Fi.
It becomes the two-peer sync demonstration once the daemon exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random

from csembed import native
from csembed.access_code import AccessCode
from csembed.board_profile import load_board
from csembed.protocol.wire import (
    Decoder,
    Limits,
    Message,
    PayloadChunk,
    PayloadEnd,
    encode_chunk,
    encode_message,
    encode_payload_end,
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("demo", help="a short tour of what csembed does",
                              description="Run a short demonstration of csembed's parts.")
    p.add_argument("--board", default="wifi-piano", help="board profile to show (wifi-piano)")
    p.set_defaults(handler=run)


def _recording(size: int, seed: int) -> bytes:
    """Bytes shaped like a MIDI take: a header and repeating note events."""
    rng = random.Random(seed)
    events = bytearray(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk")
    while len(events) < size:
        events += bytes((0x90, rng.randrange(36, 96), rng.randrange(40, 127), rng.randrange(0, 60)))
    return bytes(events[:size])


def run(args: argparse.Namespace) -> int:
    board = load_board(args.board)
    print(f"1. Board profile {board.name}: {board.description}")
    for key, value in board.summary().items():
        print(f"     {key:<12} {value}")

    code = AccessCode.generate()
    typed = " ".join(code.text[i:i + 4] for i in range(0, 33, 4)).lower().replace("o", "0")
    again = AccessCode.parse(typed)
    print("\n2. A one-time access code for sharing the piano's recordings")
    print(f"     code       {code.text}\n     url        {code.url}")
    print(f"     typed as   {typed!r}")
    print(f"     parsed     {'the same code' if again == code else 'A DIFFERENT CODE'}; "
          f"access ID {again.access_id[:16]}...")

    take = _recording(256 * 1024, seed=int.from_bytes(os.urandom(4), "big"))
    print(f"\n3. A saved take of {len(take)} bytes, hashed by the {native.BACKEND} backend")
    print(f"     rollsum    {native.rollsum(take):08x}")
    print(f"     RabinKarp  {native.rabinkarp(take):08x}")
    ours, anchor = native.blake2b(take, 32).hex(), hashlib.blake2b(take, digest_size=32).hexdigest()
    print(f"     BLAKE2b    {ours[:32]}... ({'matches' if ours == anchor else 'DIFFERS FROM'}"
          " hashlib)")

    chunk = board.memory.chunk_size
    header = {"type": "directory.data", "sha256": hashlib.sha256(take).hexdigest()}
    stream = encode_message(header, payload=True)
    stream += b"".join(encode_chunk(take[i:i + chunk]) for i in range(0, len(take), chunk))
    stream += encode_payload_end()
    decoder = Decoder(Limits(max_body=board.memory.max_message,
                             max_chunk=board.memory.max_message, max_delivery=chunk))
    received = hashlib.sha256()
    pieces = 0
    end = False
    for start in range(0, len(stream), 1500):  # one Ethernet-sized segment at a time
        decoder.receive_data(stream[start:start + 1500])
        for event in decoder.events():
            if isinstance(event, Message):
                print(f"\n4. Streamed as one {event.type!r} message ({len(stream)} bytes framed)")
            elif isinstance(event, PayloadChunk):
                received.update(event.data)
                pieces += 1
            elif isinstance(event, PayloadEnd):
                end = True
    ok = end and received.hexdigest() == header["sha256"]
    print(f"     decoded in {pieces} pieces, never more than {chunk} bytes held; "
          f"SHA-256 {'verified' if ok else 'MISMATCH'}")
    return 0 if ok and again == code and ours == anchor else 1
