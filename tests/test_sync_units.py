"""Unit tests of the sync engine's small parts: messages, output queue, pick order, streams."""

from __future__ import annotations

import random

import pytest

from csembed.directory import sync_messages as msg
from csembed.directory.transfer_fetch import PickQueue
from csembed.directory.transfer_serve import OutgoingQueue, payload_units
from csembed.directory.transfer_stream import RemoteStream, StreamError
from csembed.protocol.wire import Decoder, Message, PayloadChunk, PayloadEnd

SHA = "ab" * 32


def decode(data: bytes) -> list:
    decoder = Decoder()
    decoder.receive_data(data)
    return list(decoder.events())


def parsed(data: bytes):
    return msg.parse(decode(data)[0])


# -- messages -------------------------------------------------------------------------


def test_built_messages_parse_back():
    assert parsed(msg.encode(msg.Get(SHA, (5, 10)))) == msg.Get(SHA, (5, 10))
    assert parsed(msg.encode(msg.Get(SHA.upper()))) == msg.Get(SHA, None)
    assert parsed(msg.encode(msg.Present(SHA))) == msg.Present(SHA)
    assert parsed(msg.encode(msg.NotPresent(SHA))) == msg.NotPresent(SHA)
    assert parsed(msg.encode(msg.GetError(SHA, "x" * 5000))) == msg.GetError(SHA, "x" * 1024)
    assert parsed(msg.encode(msg.GetPresence())) == msg.GetPresence()
    assert parsed(msg.encode(msg.DataHeader(SHA, (0, 3)))) == msg.DataHeader(SHA, (0, 3))
    assert parsed(msg.encode(msg.BloomFilterHeader(3))) == msg.BloomFilterHeader(3)
    signature = msg.SignatureHeader(SHA, "cd" * 32)
    assert parsed(msg.encode(signature)) == signature
    assert parsed(msg.encode(msg.PatchHeader(SHA))) == msg.PatchHeader(SHA)


@pytest.mark.parametrize("body, payload, reason", [
    ({"type": "directory.get", "sha256": "zz"}, False, "64 hex digits"),
    ({"type": "directory.get"}, False, "64 hex digits"),
    ({"type": "directory.get", "sha256": SHA, "range": [-1, 5]}, False, "range"),
    ({"type": "directory.get", "sha256": SHA, "range": [1]}, False, "range"),
    ({"type": "directory.get", "sha256": SHA, "range": [True, 5]}, False, "range"),
    ({"type": "directory.get", "sha256": SHA, "range": [1.0, 5]}, False, "range"),
    ({"type": "directory.get", "sha256": SHA, "range": [2 ** 62, 2 ** 62]}, False, "ends beyond"),
    ({"type": "directory.get", "sha256": SHA}, True, "must not carry"),
    ({"type": "directory.data", "sha256": SHA}, False, "must carry"),
    ({"type": "directory.bloom_filter", "k_value": 9}, True, "k_value"),
    ({"type": "directory.bloom_filter", "k_value": True}, True, "k_value"),
    ({"type": "rsync.signature", "sha256": SHA, "basis_sha256": 7}, True, "basis_sha256"),
    ({"type": "directory.unknown"}, False, "not a directory"),
])
def test_hostile_fields_are_refused_with_the_field_named(body, payload, reason):
    message = Message(body=body, raw=b"{}", has_payload=payload)
    with pytest.raises(msg.SyncMessageError, match=reason):
        msg.parse(message)


# -- output queue --------------------------------------------------------------------------


def test_payload_producers_run_only_when_pulled_and_control_goes_between_payloads():
    reads = []

    def pieces():
        for i in range(3):
            reads.append(i)
            yield bytes([65 + i]) * 10

    queue = OutgoingQueue()
    queue.push_stream(payload_units(msg.encode(msg.DataHeader(SHA, None)), pieces()))
    queue.push_stream(payload_units(msg.encode(msg.DataHeader(SHA, None)), iter([b"z"])))
    assert reads == []  # nothing read yet
    first = queue.pull(110)  # the header (106 bytes) and one chunk
    assert len(first) == 2 and reads == [0]
    queue.push(msg.encode(msg.Present(SHA)))  # arrives while a payload is open: waits for its end
    rest = queue.pull(1 << 20)
    events = decode(b"".join(first + rest))
    kinds = [type(e).__name__ if not isinstance(e, Message) else e.type for e in events]
    assert kinds == ["directory.data", "PayloadChunk", "PayloadChunk", "PayloadChunk",
                     "PayloadEnd", "directory.present", "directory.data", "PayloadChunk",
                     "PayloadEnd"]
    assert not queue


def test_a_producer_that_works_without_output_is_bounded_per_pull():
    def slow():
        yield msg.encode(msg.PatchHeader(SHA))
        for _ in range(100):
            yield b""  # e.g. a delta over an unchanged region
        yield b"3\nabc"
        yield b"0\n"

    queue = OutgoingQueue()
    queue.push_stream(slow())
    calls = 0
    out = []
    while queue:
        out += queue.pull(1 << 20, work_budget=8)
        calls += 1
    assert calls >= 100 // 8
    events = decode(b"".join(out))
    assert isinstance(events[1], PayloadChunk) and isinstance(events[2], PayloadEnd)


def test_clearing_closes_running_producers():
    closed = []

    def producer():
        try:
            yield msg.encode(msg.DataHeader(SHA, None))
            yield b"1\nx"
            yield b"0\n"
        finally:
            closed.append(True)

    queue = OutgoingQueue()
    queue.push_stream(producer())
    queue.pull(1)
    queue.clear()
    assert closed == [True] and not queue


# -- random pick order ---------------------------------------------------------------------


def test_pick_order_is_random_but_reproducible_from_the_injected_rng():
    def order(seed):
        queue = PickQueue(random.Random(seed))
        for i in range(50):
            queue.add(f"{i:064x}")
        return [queue.pick() for _ in range(50)]

    first, again, other = order(1), order(1), order(2)
    assert first == again != other
    assert sorted(first) == [f"{i:064x}" for i in range(50)]
    assert first != sorted(first)


def test_waiting_hashes_leave_the_pool_until_woken():
    queue = PickQueue(random.Random(0))
    queue.add("a")
    queue.wait("a")
    assert queue.pick() is None and "a" in queue
    queue.wake("a")
    assert queue.pick() == "a" and "a" not in queue


# -- streams -------------------------------------------------------------------------------


def test_stream_cache_is_bounded_and_reads_span_blocks():
    data = bytes(range(256)) * 40  # 10,240 bytes
    stream = RemoteStream("/f", SHA, len(data), block_size=1000, max_blocks=3)
    assert stream.read_cached(990, 20) is None
    assert stream.missing(990, 20) == [0, 1]
    for index in (0, 1):
        start, count = stream.block_range(index)
        stream.feed(index, data[start:start + count // 2])
        stream.feed(index, data[start + count // 2:start + count])
    assert stream.read_cached(990, 20) == data[990:1010]
    for index in (5, 6, 10):
        start, count = stream.block_range(index)
        stream.put_block(index, data[start:start + count])
    assert stream.cached_bytes <= 3 * 1000
    assert stream.read_cached(10_230, 100) == data[10_230:]  # the short last block
    assert stream.read_cached(0, 10) is None  # evicted
    with pytest.raises(ValueError, match="cached blocks"):
        stream.missing(0, 4000)
    stream.fail("peer gone")
    with pytest.raises(StreamError, match="peer gone"):
        stream.read_cached(0, 1)


def test_a_peer_sending_more_than_a_block_fails_the_stream():
    stream = RemoteStream("/f", SHA, 100, block_size=10)
    stream.feed(0, b"x" * 11)
    with pytest.raises(StreamError, match="more than block"):
        stream.read_cached(0, 5)
