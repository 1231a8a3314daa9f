"""Adaptive gzip: text is deflated, incompressible data is sent in stored blocks,
and whatever the mix, the stream is one standard zlib stream."""

from __future__ import annotations

import random
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from csembed.protocol.gzip_stream import (
    MAX_BACKOFF,
    PROBE_AFTER_SMALL,
    SMALL_UNIT,
    GzipDecoder,
    GzipEncoder,
    stored_blocks,
)

TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i
                for i in range(3000))


def noise(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def bodies(frames: list[bytes]) -> bytes:
    out = []
    for frame in frames:
        length, _, body = frame.partition(b":")
        assert int(length) == len(body)
        out.append(body)
    return b"".join(out)


def send(encoder: GzipEncoder, units: list[tuple[bytes, ...]]) -> bytes:
    return bodies([encoder.encode(*unit) for unit in units])


def test_text_is_compressed_at_the_level() -> None:
    encoder = GzipEncoder(6)
    stream = send(encoder, [(b'{"type":"file"}\n',), (b"65536:", TEXT[:65536])])
    assert encoder.stored_units == 0
    assert len(stream) < 65536 // 5
    assert zlib.decompressobj().decompress(stream) == b'{"type":"file"}\n65536:' + TEXT[:65536]


def test_random_data_is_sent_stored_after_one_probe() -> None:
    data = noise(1 << 20)
    units = [(b'{"type":"file"}\n',)] + [(b"65536:", data[i:i + 65536])
                                         for i in range(0, len(data), 65536)]
    encoder = GzipEncoder(6)
    stream = send(encoder, units)
    assert encoder.stored_units >= 16  # every payload unit (the first after its probe)
    assert encoder.probes <= 1 + 16 // 2  # the first probe, then a doubling back-off
    # Stored blocks cost 5 bytes per 64 KiB, nothing like deflate's CPU.
    assert len(stream) < len(data) + 100 * 5 + 200
    assert zlib.decompressobj().decompress(stream) == b"".join(b"".join(u) for u in units)


def test_backoff_is_bounded() -> None:
    encoder = GzipEncoder(1)
    data = noise(SMALL_UNIT * 2)
    for _ in range(400):
        encoder.encode(data)
    assert encoder.stored_units >= 399
    assert encoder.probes <= 1 + 400 // MAX_BACKOFF + 7


def test_many_small_files_are_not_each_probed() -> None:
    # 4 KiB random files, each one message then one payload unit: in stored
    # mode only the back-off decides when to probe again, not each new message.
    encoder = GzipEncoder(6)
    units: list[tuple[bytes, ...]] = []
    for i in range(400):
        units += [(b'{"type":"directory.data"}',), (noise(4096, seed=i),)]
    stream = send(encoder, units)
    assert encoder.stored_units >= 399 * 2
    assert encoder.probes <= 1 + 400 // MAX_BACKOFF + 7
    assert zlib.decompressobj().decompress(stream) == b"".join(b"".join(u) for u in units)


def test_small_text_files_after_noise_are_deflated_again() -> None:
    encoder = GzipEncoder(6)
    units: list[tuple[bytes, ...]] = [(b"{}",), (noise(8192),)]
    for i in range(200):
        units += [(b"{}",), (TEXT[i * 100:i * 100 + 4096],)]
    frames = [encoder.encode(*u) for u in units]
    assert sum(len(f) for f in frames[-20:]) < 10 * 4096 // 4  # back to deflate
    assert zlib.decompressobj().decompress(bodies(frames)) == b"".join(b"".join(u) for u in units)


def test_a_large_unit_after_a_message_is_probed_at_once() -> None:
    encoder = GzipEncoder(6)
    encoder.encode(b"{}")
    encoder.encode(noise(PROBE_AFTER_SMALL))  # stored now, with a back-off
    probes = encoder.probes
    encoder.encode(b"{}")
    encoder.encode(TEXT[:PROBE_AFTER_SMALL])
    assert encoder.probes == probes + 1 and encoder.stored_units == 2


def test_stream_switches_back_to_deflate_for_text() -> None:
    encoder = GzipEncoder(6)
    text = TEXT[:20_000]
    units: list[tuple[bytes, ...]] = [(b"{}",), (noise(60_000) + text,), (b"{}",), (text,),
                                      (b"{}",), (TEXT,)]
    frames = [encoder.encode(*u) for u in units]
    assert len(frames[1]) > 80_000  # stored: its first bytes did not compress
    # Back to deflate, primed with the last 32 KiB sent: the text just sent
    # stored is one back-reference away.
    assert len(frames[3]) < 500
    assert len(frames[5]) < len(TEXT) // 4
    assert encoder.stored_units == 2  # the noisy unit and the small message after it
    assert zlib.decompressobj().decompress(bodies(frames)) == b"".join(b"".join(u) for u in units)


def test_non_adaptive_always_deflates() -> None:
    encoder = GzipEncoder(6, adaptive=False)
    encoder.encode(noise(100_000))
    assert encoder.stored_units == 0 and encoder.probes == 0


def test_stored_blocks_are_standard_deflate() -> None:
    data = noise(200_000)
    blocks = b"".join(stored_blocks(data))
    # A raw stream of non-final stored blocks, then an empty final stored block.
    raw = blocks + b"\x01\x00\x00\xff\xff"
    assert zlib.decompress(raw, -15) == data


def test_output_is_one_standard_zlib_stream_with_header() -> None:
    encoder = GzipEncoder(9)
    frames = [encoder.encode(noise(70_000)), encoder.encode(b"{}"), encoder.encode(TEXT)]
    stream = bodies(frames)
    assert stream[:2] == b"\x78\x9c" and int.from_bytes(stream[:2], "big") % 31 == 0
    d = zlib.decompressobj()
    assert d.decompress(stream) == noise(70_000) + b"{}" + TEXT
    assert not d.eof  # the stream stays open for the whole connection


_unit = st.one_of(
    st.binary(max_size=300),
    st.integers(0, 2 ** 32).map(lambda seed: noise(SMALL_UNIT + seed % 70_000, seed)),
    st.integers(1, len(TEXT)).map(lambda n: TEXT[:n]),
    st.tuples(st.integers(0, 2 ** 16), st.integers(1, 40_000)).map(
        lambda p: noise(p[1], p[0]) + TEXT[:p[1]]),
)


@settings(max_examples=80, deadline=None)
@given(units=st.lists(st.lists(_unit, min_size=1, max_size=3).map(tuple), min_size=1,
                      max_size=12),
       level=st.integers(1, 9), max_output=st.integers(1, 70_000))
def test_mixed_streams_round_trip(units: list[tuple[bytes, ...]], level: int,
                                  max_output: int) -> None:
    units = [u for u in units if sum(map(len, u))]
    encoder = GzipEncoder(level)
    stream = send(encoder, units)
    expected = b"".join(b"".join(u) for u in units)
    assert zlib.decompressobj().decompress(stream) == expected
    decoder = GzipDecoder(max_output)
    decoder.receive_data(b"".join(encoder_frames(units, level)))
    out = bytearray()
    while piece := decoder.read():
        assert len(piece) <= max_output
        out += piece
    assert bytes(out) == expected and decoder.at_frame_boundary


def encoder_frames(units: list[tuple[bytes, ...]], level: int) -> list[bytes]:
    encoder = GzipEncoder(level)
    return [encoder.encode(*u) for u in units]
