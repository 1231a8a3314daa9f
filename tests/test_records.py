"""The record layer on its own: framing, splitting, tags, tampering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csembed.security.errors import RecordError
from csembed.security.records import (
    HEADER_BYTES,
    LENGTH_BYTES,
    MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
    OVERHEAD,
    RecordReader,
    RecordWriter,
)

KEY = bytes(range(32))


def split(blob: bytes | bytearray) -> list[bytes | bytearray]:
    records: list[bytes | bytearray] = []
    while blob:
        n = LENGTH_BYTES + RecordReader.frame_length(blob[:LENGTH_BYTES])
        records.append(blob[LENGTH_BYTES:n])
        blob = blob[n:]
    return records


def test_constants() -> None:
    assert (HEADER_BYTES, OVERHEAD, MAX_CIPHERTEXT, MAX_PLAINTEXT) == (24, 17, 65535, 65518)


@pytest.mark.parametrize("size,count", [(0, 1), (1, 1), (MAX_PLAINTEXT, 1),
                                        (MAX_PLAINTEXT + 1, 2), (3 * MAX_PLAINTEXT, 3)])
def test_split_sizes(size: int, count: int) -> None:
    writer = RecordWriter(KEY)
    records = split(writer.seal(b"q" * size))
    assert len(records) == count and writer.records_sealed == count
    assert all(len(r) <= MAX_CIPHERTEXT for r in records)
    reader = RecordReader(KEY, writer.header)
    assert b"".join(reader.open(r)[0] for r in records) == b"q" * size


def test_final_only_on_the_last_record_and_nothing_after() -> None:
    writer = RecordWriter(KEY)
    records = split(writer.seal(b"z" * (MAX_PLAINTEXT + 5), final=True))
    reader = RecordReader(KEY, writer.header)
    assert [reader.open(r)[1] for r in records] == [False, True]
    with pytest.raises(RecordError, match="already closed"):
        writer.seal(b"more")
    with pytest.raises(RecordError, match="after the peer's close"):
        reader.open(records[-1])


def test_wrong_key_or_header_fails() -> None:
    writer = RecordWriter(KEY)
    (record,) = split(writer.seal(b"secret"))
    with pytest.raises(RecordError, match="failed authentication"):
        RecordReader(bytes(32), writer.header).open(record)
    with pytest.raises(RecordError, match="failed authentication"):
        RecordReader(KEY, bytes(HEADER_BYTES)).open(record)
    with pytest.raises(RecordError, match="24 bytes"):
        RecordReader(KEY, b"short")


def test_every_flipped_byte_of_a_record_fails_and_the_reader_stays_failed() -> None:
    writer = RecordWriter(KEY)
    first, second = split(writer.seal(b"first") + writer.seal(b"second"))
    for i in range(len(first)):
        reader = RecordReader(KEY, writer.header)
        with pytest.raises(RecordError):
            reader.open(first[:i] + bytes([first[i] ^ 0x40]) + first[i + 1:])
        with pytest.raises(RecordError):  # no recovery, even with the genuine next record
            reader.open(second)


def test_frame_length_bounds() -> None:
    with pytest.raises(RecordError, match="shorter than"):
        RecordReader.frame_length(b"\x00\x10")
    assert RecordReader.frame_length(b"\x00\x11") == 17
    assert RecordReader.frame_length(b"\xff\xff") == 65535


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_any_sequence_round_trips_in_order(messages: list[bytes]) -> None:
    writer = RecordWriter(KEY)
    blob = b"".join(writer.seal(m) for m in messages) + writer.seal(b"", final=True)
    reader = RecordReader(KEY, writer.header)
    opened = [reader.open(r) for r in split(blob)]
    assert [p for p, _ in opened[:-1]] == messages
    assert opened[-1] == (b"", True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3 * MAX_PLAINTEXT), min_size=1, max_size=5))
def test_parts_are_split_exactly_like_their_concatenation(sizes: list[int]) -> None:
    data = bytes(i % 251 for i in range(sum(sizes)))
    parts, offset = [], 0
    for size in sizes:
        parts.append(memoryview(data)[offset:offset + size])
        offset += size
    writer = RecordWriter(KEY)
    reader = RecordReader(KEY, writer.header)
    opened = [reader.open(r)[0] for r in split(writer.seal(*parts))]
    expected = [data[i:i + MAX_PLAINTEXT] for i in range(0, len(data), MAX_PLAINTEXT)] or [b""]
    assert opened == expected
