"""Fuzzing the wire decoder: hostile bytes raise WireError and nothing else, never hang.

Seeded, so a failure reproduces: the assertion message names the seed and input.
Inputs are mutations of valid streams (where the interesting bugs live: a
header almost right, a length off by one, a digit where LF belongs) plus raw
random bytes, fed in random splits, with the draft's limits and small ones.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csembed.protocol.wire import (
    NEED_DATA,
    Decoder,
    Limits,
    Message,
    PayloadChunk,
    WireError,
    encode_chunk,
    encode_message,
    encode_payload_end,
)

INPUTS_PER_SEED = 25_000
SEEDS = [1, 2, 3, 4]  # 100k inputs in all
SPECIAL = b'm!s$:{}[]"\\\n\r 0123456789-+=/AZaz\x00\xff\xc3\xa9'
LIMITS = [Limits(), Limits(max_body=64, max_chunk=16, max_delivery=5, max_signature=8)]


def _valid_streams(rng: random.Random) -> list[bytes]:
    streams = []
    for _ in range(40):
        stream = b""
        for _ in range(rng.randint(1, 3)):
            body: dict[str, Any] = {"type": rng.choice(["core.ping", "x", "é.ü"])}
            for key in rng.sample(["a", "size", "n", "l", "s", "ü"], rng.randint(0, 3)):
                body[key] = rng.choice(
                    [rng.randint(-(2**63), 2**63 - 1), "text\n\u2028", [1, {"k": None}], 1.5, True]
                )
            signature = rng.randbytes(rng.choice([1, 3, 64])) if rng.random() < 0.5 else None
            payload = rng.random() < 0.5
            stream += encode_message(body, signature=signature, payload=payload)
            if payload:
                for _ in range(rng.randint(0, 3)):
                    stream += encode_chunk(rng.randbytes(rng.randint(1, 20)))
                stream += encode_payload_end()
        streams.append(stream)
    return streams


def _mutate(rng: random.Random, data: bytes, streams: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:  # replace a byte with anything
            buf[pos % len(buf)] = rng.randrange(256)
        elif op == 1 and buf:  # replace a byte with one the grammar cares about
            buf[pos % len(buf)] = rng.choice(SPECIAL)
        elif op == 2:  # insert grammar bytes
            buf[pos:pos] = bytes(rng.choice(SPECIAL) for _ in range(rng.randint(1, 4)))
        elif op == 3:  # delete a run
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 4:  # duplicate a run
            end = min(len(buf), pos + rng.randint(1, 16))
            buf[pos:pos] = buf[pos:end]
        elif op == 5:  # truncate
            del buf[pos:]
        elif op == 6:  # splice in part of another stream
            other = rng.choice(streams)
            start = rng.randint(0, len(other))
            buf[pos:pos] = other[start : start + rng.randint(1, 40)]
        else:  # a long or odd digit run where digits may be expected
            buf[pos:pos] = rng.choice([b"9" * rng.randint(1, 40), b"0", b"00", b"16777217"])
    return bytes(buf)


def _run(data: bytes, limits: Limits, rng: random.Random) -> None:
    """Decode ``data`` split at random points; only WireError may escape."""
    decoder = Decoder(limits)
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 3)))
    bounds = [0, *cuts, len(data)]
    budget = len(data) + 2  # every event consumes at least one byte
    events = 0
    for start, end in zip(bounds, bounds[1:], strict=False):
        if start == end:
            continue  # b"" would mean end of stream
        decoder.receive_data(data[start:end])
        while (event := decoder.next_event()) is not NEED_DATA:
            events += 1
            assert events <= budget, "decoder produced events without consuming input"
            if isinstance(event, PayloadChunk):
                assert 0 < len(event.data) <= limits.max_delivery
            elif isinstance(event, Message):
                assert isinstance(event.type, str) and event.type
    decoder.receive_data(b"")
    while decoder.next_event() is not NEED_DATA:
        events += 1
        assert events <= budget
    assert decoder.at_boundary and decoder.offset == len(data)


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_mutated_and_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    streams = _valid_streams(rng)
    outcomes = {"ok": 0, "error": 0}
    for index in range(INPUTS_PER_SEED):
        choice = rng.random()
        if choice < 0.05:
            data = rng.choice(streams)
        elif choice < 0.8:
            data = _mutate(rng, rng.choice(streams), streams)
        elif choice < 0.9:
            data = bytes(rng.choice(b"m!s$")) + rng.randbytes(rng.randint(0, 40))
        else:
            data = rng.randbytes(rng.randint(0, 40))
        limits = LIMITS[index % 2]
        try:
            _run(data, limits, rng)
            outcomes["ok"] += 1
        except WireError as exc:
            assert 0 <= exc.offset <= len(data), (seed, index, data, exc)
            outcomes["error"] += 1
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            raise AssertionError(f"seed {seed} input {index} {data!r}: {exc!r}") from exc
    # both paths must be exercised, or the mutations are not doing their job
    assert outcomes["ok"] > INPUTS_PER_SEED // 20 and outcomes["error"] > INPUTS_PER_SEED // 2


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), seed=st.integers(0, 2**32))
def test_fuzz_arbitrary_bytes(data: bytes, seed: int) -> None:
    try:
        _run(data, LIMITS[seed % 2], random.Random(seed))
    except WireError:
        pass
