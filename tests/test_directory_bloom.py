"""The presence bloom filter: the draft's bit rule, layout, special values, hostile input."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csembed.directory.bloom import (
    BloomFilter,
    CountingBloomFilter,
    bit_positions,
    choose_parameters,
    receive_filter,
)
from csembed.directory.errors import BloomError
from csembed.directory.sync_messages import BloomFilterHeader

DRAFT_SHA = "c16987a16bc7f7dd45e341b855171e8d5c6577a70febd408fbe6d2a194c18224"


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_draft_example_bits() -> None:
    # directory.md: 1000-bit filter, k = 2 -> bits 689 and 229.
    assert bit_positions(DRAFT_SHA, 2, 1000) == [689, 229]
    assert bit_positions(bytes.fromhex(DRAFT_SHA), 8, 1000)[:2] == [689, 229]


def test_lsb_first_layout() -> None:
    bloom = BloomFilter.empty(1000, 2)
    assert len(bloom.to_bytes()) == 125 and bloom.size_bits == 1000
    bloom.add(DRAFT_SHA)
    data = bloom.to_bytes()
    expected = bytearray(125)
    expected[689 // 8] |= 1 << (689 % 8)  # byte 86, value 0x02
    expected[229 // 8] |= 1 << (229 % 8)  # byte 28, value 0x20
    assert data == bytes(expected)
    assert data[86] == 0x02 and data[28] == 0x20
    assert DRAFT_SHA in receive_filter(2, [data[:50], data[50:]])


def test_special_values() -> None:
    everything = receive_filter(5, [b"\xff"])
    nothing = receive_filter(5, [b"\x00"])
    for i in range(50):
        assert _sha(i) in everything and _sha(i) not in nothing
    assert everything.is_everything and nothing.is_nothing
    assert BloomFilter.everything().to_bytes() == b"\xff"
    assert BloomFilter.nothing().to_bytes() == b"\x00"
    assert BloomFilterHeader(BloomFilter.everything().k).to_body() == {
        "type": "directory.bloom_filter", "k_value": 1}


@pytest.mark.parametrize(("count", "rate"), [(1000, 0.01), (5000, 0.05), (200, 0.001)])
def test_chosen_parameters_meet_the_rate(count: int, rate: float) -> None:
    size_bits, k = choose_parameters(count, rate)
    assert size_bits % 8 == 0 and 1 <= k <= 8
    bloom = BloomFilter.for_hashes((_sha(i) for i in range(count)), count, rate)
    assert all(_sha(i) in bloom for i in range(count))
    trials = 20_000
    false_hits = sum(_sha(-1 - i) in bloom for i in range(trials))
    assert false_hits / trials < rate * 2


def test_parameters_respect_the_byte_cap() -> None:
    size_bits, k = choose_parameters(1_000_000, 0.001, max_bytes=1024)
    assert size_bits == 8192 and k == 1
    assert choose_parameters(0) == (8, 1)
    assert choose_parameters(1000, 0.01)[1] == 7


@pytest.mark.parametrize(("k", "chunks", "limit"), [
    (0, [b"\x01"], 10), (9, [b"\x01"], 10), ("3", [b"\x01"], 10), (True, [b"\x01"], 10),
    (None, [b"\x01"], 10), (3, [], 10), (3, [b""], 10), (3, [b"12345", b"678901"], 10),
])
def test_hostile_filters(k, chunks, limit: int) -> None:
    with pytest.raises(BloomError):
        receive_filter(k, chunks, max_bytes=limit)


def test_hostile_filter_stops_reading_early() -> None:
    def endless():
        while True:
            yield b"\x00" * 1000

    with pytest.raises(BloomError, match="larger"):
        receive_filter(3, endless(), max_bytes=100_000)


@pytest.mark.parametrize("bad", ["xyz", "ab" * 31, b"short", 5])
def test_bad_digests(bad) -> None:
    bloom = BloomFilter.empty(64, 1)
    if isinstance(bad, int):
        assert bad not in bloom
        return
    with pytest.raises(BloomError):
        bloom.add(bad)


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=60),
       st.integers(min_value=1, max_value=8), st.integers(min_value=1, max_value=64))
def test_no_false_negatives(digests: list[bytes], k: int, size_bytes: int) -> None:
    bloom = BloomFilter.empty(size_bytes * 8, k)
    for digest in digests:
        bloom.add(digest)
    assert all(d in bloom for d in digests)
    again = receive_filter(k, [bloom.to_bytes()])
    assert all(d.hex() in again for d in digests)


def test_counting_filter_matches_plain_and_removes() -> None:
    rng = random.Random(3)
    hashes = [_sha(rng.randrange(10**9)) for _ in range(300)]
    counting = CountingBloomFilter(4096, 4)
    plain = BloomFilter.empty(4096, 4)
    for sha in hashes:
        counting.add(sha)
        plain.add(sha)
    assert counting.to_filter().to_bytes() == plain.to_bytes()
    for sha in hashes[:150]:
        counting.remove(sha)
    rebuilt = BloomFilter.empty(4096, 4)
    for sha in hashes[150:]:
        rebuilt.add(sha)
    assert counting.to_filter().to_bytes() == rebuilt.to_bytes()
    assert all(sha in counting for sha in hashes[150:])


def test_counting_filter_saturates_without_false_negatives() -> None:
    counting = CountingBloomFilter(8, 1)
    hashes = [_sha(i) for i in range(600)]
    for sha in hashes:
        counting.add(sha)
    for sha in hashes[:599]:
        counting.remove(sha)
    assert hashes[599] in counting
