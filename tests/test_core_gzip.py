"""The gzip extension: framing, bounded inflation, and the core using it both ways."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_core_support import RawPeer, World, drain, of_type, pump, start_body

from csembed.protocol.core import CoreConfig, Ready
from csembed.protocol.core_access import Grant
from csembed.protocol.gzip_stream import GzipDecoder, GzipEncoder, GzipError
from csembed.protocol.wire import Limits, Message, PayloadChunk, PayloadEnd, encode_message
from csembed.security.handshake import SessionFailed
from csembed.security.keys import READ_WRITE


def inflate_all(decoder: GzipDecoder) -> list[bytes]:
    pieces = []
    while piece := decoder.read():
        pieces.append(piece)
    return pieces


def test_frames_are_length_colon_zlib_data() -> None:
    encoder = GzipEncoder(9)
    frame = encoder.encode(b'{"type":"core.ping"}\n')
    length, _, body = frame.partition(b":")
    assert int(length) == len(body)
    assert body[:1] == b"\x78"  # zlib header (RFC 1950), deflate with 32 KiB window
    assert zlib.decompressobj().decompress(body) == b'{"type":"core.ping"}\n'


@settings(max_examples=60, deadline=None)
@given(units=st.lists(st.binary(max_size=2000) | st.just(b"{}" * 3000), min_size=1, max_size=6),
       cuts=st.lists(st.integers(1, 700), min_size=1, max_size=30),
       max_output=st.integers(1, 5000))
def test_any_split_round_trips(units: list[bytes], cuts: list[int], max_output: int) -> None:
    encoder = GzipEncoder(6)
    stream = b"".join(encoder.encode(u) for u in units if u)
    decoder = GzipDecoder(max_output)
    out = bytearray()
    position, i = 0, 0
    while position < len(stream):
        step = cuts[i % len(cuts)]
        decoder.receive_data(stream[position:position + step])
        position += step
        i += 1
        for piece in inflate_all(decoder):
            assert len(piece) <= max_output
            out += piece
    decoder.receive_data(b"")
    out += b"".join(inflate_all(decoder))
    assert bytes(out) == b"".join(units)
    assert decoder.at_frame_boundary


def test_zip_bomb_is_inflated_in_bounded_pieces() -> None:
    bomb = GzipEncoder(9).encode(bytes(16 << 20))
    assert len(bomb) < 40_000
    decoder = GzipDecoder(64 * 1024)
    decoder.receive_data(bomb)
    sizes = [len(p) for p in inflate_all(decoder)]
    assert max(sizes) == 64 * 1024 and sum(sizes) == 16 << 20


@pytest.mark.parametrize("stream,message", [
    (b"12x", "expected digits and ':'"),
    (b"0:", "outside 1.."),
    (b"007:abc", "bad compressed frame length"),
    (b"99999999999:", "expected digits and ':'"),
    (b"5:hello", "bad zlib stream header 6865"),
    (b"2:\x78\xbb", "no preset dictionary"),  # FDICT set (FCHECK valid)
    (b"2:\x88\x98", "window of at most 32 KiB"),  # CINFO 8
    (b"1:\x78" + b"1:\x9d", "valid check"),  # the header split across frames
    (b"5:\x78\x9c\xff\xff\xff", "corrupt compressed data"),  # reserved block type
])
def test_bad_frames_fail_clearly(stream: bytes, message: str) -> None:
    decoder = GzipDecoder()
    decoder.receive_data(stream)
    with pytest.raises(GzipError, match=message):
        inflate_all(decoder)


def test_the_zlib_header_may_arrive_split_and_is_not_inflated() -> None:
    frame = GzipEncoder().encode(b"y" * 5000)
    body = frame[frame.index(b":") + 1:]
    decoder = GzipDecoder()
    decoder.receive_data(b"1:" + body[:1])
    assert inflate_all(decoder) == []
    decoder.receive_data(b"%d:" % (len(body) - 1) + body[1:])
    assert b"".join(inflate_all(decoder)) == b"y" * 5000


def test_finished_zlib_stream_and_truncation_fail() -> None:
    z = zlib.compressobj()
    finished = z.compress(b"abc") + z.flush(zlib.Z_FINISH)
    decoder = GzipDecoder()
    decoder.receive_data(b"%d:%s" % (len(finished), finished))
    with pytest.raises(GzipError, match="must stay open"):
        inflate_all(decoder)
    decoder = GzipDecoder()
    frame = GzipEncoder().encode(b"x" * 100)
    decoder.receive_data(frame[:-3])
    decoder.receive_data(b"")
    with pytest.raises(GzipError, match="ended inside a compressed frame"):
        inflate_all(decoder)


# ---------------------------------------------------------------- in the core


def traffic(client: Any) -> None:
    """A sequence of JSON messages much like database updates, plus a payload."""
    for n in range(200):
        client.send_message({"type": "database.update", "path": f"photos/2024/img_{n:04d}.jpg",
                             "size": 1_000_000 + n, "mtime": "2024-05-01T12:00:00.000000000Z",
                             "sha256": "ab" * 32, "deleted": False})
    client.send_message({"type": "x.blob"}, payload=True)
    client.send_chunk(b"payload " * 5000)
    client.send_payload_end()


def summarize(events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for e in events:
        if isinstance(e, Message):
            out.append(e.body)
        elif isinstance(e, PayloadChunk):
            if out and isinstance(out[-1], bytes):
                out[-1] += e.data
            else:
                out.append(e.data)
        elif isinstance(e, PayloadEnd):
            out.append("end")
    return out


def run_traffic(gzip_level: int) -> tuple[list[Any], int]:
    world = World(config=CoreConfig(gzip_level=gzip_level))
    client = world.client(Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    c, s = pump(client, server)
    assert of_type(c, Ready)[0].extensions == (("gzip",) if gzip_level else ())
    traffic(client)
    wire = client.data_to_send()
    server.receive_data(wire, world.clock.now)
    return summarize(drain(server)), len(wire)


def test_gzip_round_trips_the_same_sequence_and_shrinks_json() -> None:
    plain_events, plain_bytes = run_traffic(0)
    gzip_events, gzip_bytes = run_traffic(6)
    assert gzip_events == plain_events and len(plain_events) == 203
    assert gzip_bytes < plain_bytes / 5, (gzip_bytes, plain_bytes)


def test_gzip_both_directions_including_key_exchange() -> None:
    world = World()
    code = world.issue()
    client = world.client(Grant.code_holder(code, world.joiner_peer))
    server = world.server()
    c, s = pump(client, server)
    assert of_type(c, Ready)[0].extensions == ("gzip",)
    server.send_message({"type": "x.down", "text": "hello " * 100})
    client.send_message({"type": "x.up", "text": "hi " * 100})
    c, s = pump(client, server)
    assert [m.type for m in c] == ["x.down"] and [m.type for m in s] == ["x.up"]


def test_compressed_bytes_in_the_same_record_as_the_start_are_found() -> None:
    """The switch to gzip happens mid-record if the peer packs both together."""
    world = World()
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    start = encode_message(start_body(world.joiner_peer, extensions=["gzip"]))
    compressed = GzipEncoder().encode(encode_message({"type": "x.after_start"}))
    raw.session.send_plaintext(start, compressed)
    _, s = pump(raw, server)
    assert [type(e) for e in s] == [Ready, Message] and s[1].type == "x.after_start"


def test_compressed_bomb_from_a_peer_is_delivered_in_bounded_pieces() -> None:
    world = World()
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send(start_body(world.joiner_peer, extensions=["gzip"]))
    encoder = GzipEncoder(9)
    raw.session.send_plaintext(encoder.encode(encode_message({"type": "x.bomb"}, payload=True)))
    raw.session.send_plaintext(encoder.encode(b"%d\n" % (16 << 20) + bytes(16 << 20)))
    raw.session.send_plaintext(encoder.encode(b"0\n"))
    server.receive_data(raw.data_to_send(), world.clock.now)
    sizes = []
    while True:
        event = server.next_event()
        if isinstance(event, PayloadChunk):
            sizes.append(len(event.data))
        elif isinstance(event, PayloadEnd):
            break
    assert max(sizes) <= 64 * 1024 and sum(sizes) == 16 << 20


def test_compressed_oversized_body_is_refused() -> None:
    world = World(config=CoreConfig(gzip_level=1, limits=Limits(max_body=4096)))
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send(start_body(world.joiner_peer, extensions=["gzip"]))
    raw.session.send_plaintext(GzipEncoder().encode(
        encode_message({"type": "x.big", "pad": " " * 100_000})))
    _, s = pump(raw, server)
    assert "exceeds the limit of 4096" in of_type(s, SessionFailed)[0].reason
