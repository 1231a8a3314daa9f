"""Wire decoder buffering: payload pieces cut from received buffers, split invariance.

The decoder keeps the buffers it is fed and cuts payload pieces straight from
them, parses headers in place with a fast path for canonical headers, and
joins bytes only when they straddle buffers. These tests pin what that must
not change: the events and errors (reason and offset) are the same however
the stream is split and whatever buffer type carries it; headers are accepted
exactly when they are canonical and within the limits; nothing fed is kept
once consumed.
"""

from __future__ import annotations

import random
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_wire_fuzz import _mutate, _valid_streams

from csembed.protocol.wire import (
    NEED_DATA,
    Decoder,
    Limits,
    Message,
    PayloadChunk,
    PayloadEnd,
    WireError,
    encode_chunk,
    encode_chunk_header,
    encode_message,
    encode_payload_end,
)

SMALL = Limits(max_body=64, max_chunk=16, max_delivery=5, max_signature=8)


def payload_head(size: int) -> bytes:
    return encode_message({"type": "x.file"}, payload=True) + encode_chunk_header(size)


def chunk_data(decoder: Decoder) -> list[bytes]:
    """The data of every event available now; all must be payload pieces."""
    pieces = []
    for event in decoder.events():
        assert isinstance(event, PayloadChunk)
        pieces.append(event.data)
    return pieces


def test_pieces_inside_one_buffer_are_handed_out_uncopied() -> None:
    decoder = Decoder(Limits(max_delivery=2000))
    pieces = [bytes([n]) * 2000 for n in range(3)] + [b"tail"]
    decoder.receive_data(payload_head(6004))
    assert isinstance(decoder.next_event(), Message)
    for piece in pieces:
        decoder.receive_data(piece)
        event = decoder.next_event()
        assert isinstance(event, PayloadChunk) and event.data == piece
        assert (event.data is piece) == (len(piece) >= 1024)  # short reads are copied
        assert decoder.next_event() is NEED_DATA
    decoder.receive_data(encode_payload_end())
    assert decoder.next_event() == PayloadEnd() and decoder.at_boundary


def test_header_and_data_in_one_buffer() -> None:
    data = bytes(range(256)) * 8
    stream = payload_head(len(data)) + data + encode_payload_end()
    decoder = Decoder()
    decoder.receive_data(stream)
    events = list(decoder.events())
    assert events[1:] == [PayloadChunk(data), PayloadEnd()]
    assert isinstance(events[0], Message) and type(events[1]) is PayloadChunk
    assert type(events[1].data) is bytes


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_mutable_buffers_are_copied_on_receipt(kind: type) -> None:
    """The caller may reuse its buffer at once, as with socket.recv_into."""
    decoder = Decoder()
    scratch = bytearray(payload_head(6) + b"abcdef")
    decoder.receive_data(kind(scratch))
    scratch[:] = b"X" * len(scratch)
    events = list(decoder.events())
    assert isinstance(events[0], Message) and events[0].type == "x.file"
    assert events[1] == PayloadChunk(b"abcdef") and type(events[1].data) is bytes


def test_non_byte_memoryview_counts_bytes() -> None:
    decoder = Decoder()
    decoder.receive_data(payload_head(4))
    decoder.next_event()
    words: Any = memoryview(b"\x01\x00\x02\x00").cast("H")
    decoder.receive_data(words)
    assert decoder.next_event() == PayloadChunk(b"\x01\x00\x02\x00")


def test_small_reads_are_joined_up_to_max_delivery() -> None:
    decoder = Decoder(Limits(max_delivery=300))
    decoder.receive_data(payload_head(1000))
    assert isinstance(decoder.next_event(), Message)
    for n in range(100):
        decoder.receive_data(bytes([n]) * 10)
    pieces = chunk_data(decoder)
    assert [len(p) for p in pieces] == [300, 300, 300, 100]
    assert b"".join(pieces) == b"".join(bytes([n]) * 10 for n in range(100))


def test_large_remainder_is_not_joined_to_the_next_buffer() -> None:
    decoder = Decoder()
    first, second = b"a" * 5000, b"b" * 5000
    decoder.receive_data(payload_head(10_000))
    decoder.next_event()
    decoder.receive_data(first)
    decoder.receive_data(second)
    assert chunk_data(decoder) == [first, second]
    assert decoder.offset == len(payload_head(10_000)) + 10_000


def test_short_remainder_is_joined_to_the_next_buffer() -> None:
    decoder = Decoder()
    first, second = b"a" * 2000, b"b" * 5000
    decoder.receive_data(payload_head(7000))
    decoder.next_event()
    decoder.receive_data(first)
    decoder.receive_data(second)
    assert chunk_data(decoder) == [first + second]


def test_tiny_reads_do_not_multiply_memory() -> None:
    """A peer sending a body one 2-byte record at a time: each read is joined to
    the last, not kept as an object of its own (about 40 bytes each)."""
    decoder = Decoder()
    decoder.receive_data(b"m200002{")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100_000):
            decoder.receive_data(bytes([32, 32]))
            assert decoder.next_event() is NEED_DATA
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 200_000 <= held < 300_000
    decoder.receive_data(b"}")
    with pytest.raises(WireError, match='no non-empty string "type"'):
        decoder.next_event()


def test_consumed_buffers_are_released() -> None:
    piece = payload_head(1000) + b"a" * 1000 + encode_payload_end() + b"m1"  # header begun
    before = sys.getrefcount(piece)
    decoder = Decoder()
    decoder.receive_data(piece)
    events = list(decoder.events())
    assert [type(e) for e in events] == [Message, PayloadChunk, PayloadEnd]
    assert sys.getrefcount(piece) == before + 1  # "m1" is still buffered
    decoder.receive_data(b"2")
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"{")
    assert decoder.next_event() is NEED_DATA  # header done, body of 12 bytes pending
    assert sys.getrefcount(piece) == before
    decoder.receive_data(b'"type":"x"}')
    assert isinstance(decoder.next_event(), Message) and decoder.at_boundary


def test_an_error_drops_everything_buffered() -> None:
    tail = b"12" + b"x" * 2000
    before = sys.getrefcount(tail)
    decoder = Decoder()
    decoder.receive_data(b"m")
    decoder.receive_data(tail)
    assert sys.getrefcount(tail) == before + 1
    with pytest.raises(WireError) as info:
        decoder.next_event()
    assert info.value.offset == 3 and "'{'" in info.value.reason
    assert sys.getrefcount(tail) == before


# -- split invariance ----------------------------------------------------------


def _outcome(decoder: Decoder, batches: list[list[Any]]) -> list[Any]:
    """Feed each batch of reads, then pull; events normalised so that payload
    piece boundaries do not matter (offsets after messages and ends do)."""
    result: list[Any] = []
    try:
        for batch in batches:
            for read in batch:
                decoder.receive_data(read)
            for event in decoder.events():
                if isinstance(event, PayloadChunk):
                    assert 0 < len(event.data) <= decoder.limits.max_delivery
                    assert type(event.data) is bytes
                    if result and isinstance(result[-1], bytearray):
                        result[-1] += event.data
                    else:
                        result.append(bytearray(event.data))
                elif isinstance(event, Message):
                    result.append(("message", event.kind, event.raw, event.signature,
                                   decoder.offset))
                else:
                    result.append(("end", decoder.offset))
        decoder.receive_data(b"")
        assert decoder.next_event() is NEED_DATA
    except WireError as exc:
        result.append(("error", exc.reason, exc.offset))
    return result


def _split(data: bytes, rng: random.Random) -> list[list[Any]]:
    """Reads of mixed sizes (short ones are joined, long ones kept apart) and
    types, pulled after a random number of them."""
    one_byte = len(data) < 2000 and rng.random() < 0.1
    small, large = rng.randint(1, 40), rng.randint(1024, 3000)
    batches: list[list[Any]] = [[]]
    start = 0
    while start < len(data):
        size = 1 if one_byte else rng.choice([small, large, rng.randint(1, 5000)])
        kind = rng.choice([bytes, bytes, bytes, bytearray, memoryview])
        batches[-1].append(kind(data[start : start + size]))
        start += size
        if rng.random() < 0.5:
            batches.append([])
    return batches


def _big_stream(rng: random.Random) -> bytes:
    """Messages with long bodies and chunks, so reads of 1 KiB and more hold
    headers, bodies and payload in every alignment."""
    stream = b""
    for _ in range(rng.randint(1, 3)):
        body = {"type": "x.big", "pad": "é" * rng.choice([0, 10, 700, 3000])}
        signature = rng.randbytes(64) if rng.random() < 0.5 else None
        payload = rng.random() < 0.6
        stream += encode_message(body, signature=signature, payload=payload)
        if payload:
            for _ in range(rng.randint(0, 3)):
                stream += encode_chunk(rng.randbytes(rng.choice([1, 30, 1500, 5000])))
            stream += encode_payload_end()
    return stream


@pytest.mark.parametrize("seed", [11, 12])
def test_any_split_gives_the_same_events_and_errors(seed: int) -> None:
    rng = random.Random(seed)
    small_streams = _valid_streams(rng)
    big_streams = [_big_stream(rng) for _ in range(30)]
    for index in range(1500):
        streams = small_streams if index % 3 == 0 else big_streams
        data = rng.choice(streams)
        if rng.random() < 0.7:
            data = _mutate(rng, data, streams)
        limits = [Limits(), Limits(max_delivery=3000), SMALL][index % 3]
        whole = _outcome(Decoder(limits), [[data] if data else []])
        split = _outcome(Decoder(limits), _split(data, rng))
        assert split == whole, (seed, index, limits)


# -- headers: accepted exactly when canonical and within the limits ------------


def _canonical_header(text: str, limits: Limits) -> bool:
    """The grammar restated without regular expressions, as the oracle."""
    head, _, _ = text.partition("{")
    prefix, lengths = head[:1], head[1:]
    signed = prefix in ("s", "$")
    parts = lengths.split(":") if signed else [lengths]
    if prefix not in ("m", "!", "s", "$") or len(parts) != (2 if signed else 1):
        return False
    if not all(p.isdigit() and p == str(int(p)) for p in parts):
        return False
    if not 2 <= int(parts[0]) <= limits.max_body:
        return False
    return not signed or (0 < int(parts[1]) <= limits.max_signature and int(parts[1]) % 4 == 0)


@settings(max_examples=600, deadline=None)
@given(
    text=st.text(alphabet="ms!$:{0123456789", min_size=1, max_size=22).filter(lambda t: "{" in t),
    small=st.booleans(),
)
def test_message_header_accepted_iff_canonical(text: str, small: bool) -> None:
    limits = Limits(max_body=1000, max_signature=88) if small else Limits()
    header = text[: text.index("{") + 1].encode()
    decoder = Decoder(limits)
    decoder.receive_data(header)
    try:
        assert decoder.next_event() is NEED_DATA
        accepted = decoder.offset == len(header) - 1  # all but the body's "{"
    except WireError as exc:
        assert 0 <= exc.offset < len(header)
        accepted = False
    assert accepted == _canonical_header(text, limits), header


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="0123456789\nx", min_size=1, max_size=12).filter(lambda t: "\n" in t))
def test_chunk_header_accepted_iff_canonical(text: str) -> None:
    limits = Limits(max_chunk=5000)
    header = text[: text.index("\n") + 1].encode()
    digits = header[:-1].decode()
    valid = digits.isdigit() and digits == str(int(digits)) and int(digits) <= limits.max_chunk
    opening = encode_message({"type": "x"}, payload=True)
    decoder = Decoder(limits)
    decoder.receive_data(opening + header)
    assert isinstance(decoder.next_event(), Message)
    try:
        event = decoder.next_event()
    except WireError:
        event = None
    if not valid:
        assert event is None
    elif int(digits) == 0:
        assert event == PayloadEnd() and decoder.at_boundary
    else:
        assert event is NEED_DATA and decoder.offset == len(opening) + len(header)
