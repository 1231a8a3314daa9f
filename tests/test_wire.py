"""Wire format: framing, limits, error offsets, encoder, property round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csembed.errors import CsembedError, ProtocolError
from csembed.protocol.wire import (
    MAX_BODY,
    MAX_CHUNK,
    NEED_DATA,
    Decoder,
    Limits,
    Message,
    PayloadChunk,
    PayloadEnd,
    WireError,
    encode_body,
    encode_chunk,
    encode_chunk_header,
    encode_message,
    encode_payload_end,
)

# The draft's own examples (core.md, "Wire Protocol"), byte for byte.
DRAFT_PAYLOAD = (
    b'!44{"type":"file_data","path":"test/file.txt"}\n'
    b"45\nThis is just text, but could be binary data!\n"
    b"25\nThis is more binary data\n"
    b"0\n"
)
DRAFT_SIG = b"MC0CFGq+pt0m53OP9eZSndaUtWwKnoJ7AhUAy6ScPi8Kbwe4SJiIvsf9DUFHWKE="
DRAFT_SIGNED = b's27:64{"type":"foo","arg":"bar"}\n' + DRAFT_SIG + b"\n"
DRAFT_SIGNED_PAYLOAD = (
    b'$27:64{"type":"foo","arg":"bar"}\n'
    + DRAFT_SIG
    + b"\n40\nAnother example of possibly binary data\n0\n"
)


DEFAULT = Limits()


def decode_all(data: bytes, limits: Limits = DEFAULT, eof: bool = True) -> list[Any]:
    decoder = Decoder(limits)
    decoder.receive_data(data)
    if eof:
        decoder.receive_data(b"")
    return list(decoder.events())


def wire_error(data: bytes, limits: Limits = DEFAULT, eof: bool = True) -> WireError:
    with pytest.raises(WireError) as info:
        decode_all(data, limits, eof)
    return info.value


# -- the draft's examples -------------------------------------------------------


def test_draft_payload_example_decodes() -> None:
    events = decode_all(DRAFT_PAYLOAD)
    assert [type(e) for e in events] == [Message, PayloadChunk, PayloadChunk, PayloadEnd]
    msg = events[0]
    assert msg.kind == "!" and msg.type == "file_data" and msg.has_payload
    assert msg.body == {"type": "file_data", "path": "test/file.txt"}
    assert msg.raw == b'{"type":"file_data","path":"test/file.txt"}\n'
    assert events[1].data == b"This is just text, but could be binary data!\n"
    assert events[2].data == b"This is more binary data\n"


def test_draft_signed_examples_decode() -> None:
    import base64

    (msg,) = decode_all(DRAFT_SIGNED)
    assert msg.kind == "s" and msg.signature == base64.b64decode(DRAFT_SIG)
    assert msg.raw == b'{"type":"foo","arg":"bar"}\n'
    events = decode_all(DRAFT_SIGNED_PAYLOAD)
    assert events[0].kind == "$"
    assert events[1:] == [PayloadChunk(b"Another example of possibly binary data\n"), PayloadEnd()]


def test_encoder_reproduces_draft_examples() -> None:
    import base64

    body = {"type": "file_data", "path": "test/file.txt"}
    stream = (
        encode_message(body, payload=True)
        + encode_chunk(b"This is just text, but could be binary data!\n")
        + encode_chunk(b"This is more binary data\n")
        + encode_payload_end()
    )
    assert stream == DRAFT_PAYLOAD
    sig = base64.b64decode(DRAFT_SIG)
    assert encode_message({"type": "foo", "arg": "bar"}, signature=sig) == DRAFT_SIGNED


def test_body_may_have_whitespace_and_no_trailing_newline() -> None:
    text = b'{\n  "type": "foo",\n  "message": "Basic example message"\n}'
    (msg,) = decode_all(b"m%d%s" % (len(text), text))
    assert msg.body["message"] == "Basic example message" and msg.raw == text
    (msg,) = decode_all(b'm12{"type":"x"}')
    assert msg.raw == b'{"type":"x"}'


# -- encoder --------------------------------------------------------------------


def test_encode_body_is_canonical() -> None:
    raw = encode_body({"z": 1, "type": "t", "a": {"y": [1, "é"], "b": None}})
    assert raw == '{"type":"t","a":{"b":null,"y":[1,"é"]},"z":1}\n'.encode()
    assert encode_body({"a": 1, "type": "t"}) == encode_body({"type": "t", "a": 1})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"no": "type"}, ValueError),
        ({"type": ""}, ValueError),
        ({"type": 5}, ValueError),
        ({"type": "t", "x": float("nan")}, ValueError),
        ({"type": "t", "x": float("inf")}, ValueError),
        ({"type": "t", "x": {1: "a"}}, TypeError),
        ({"type": "t", "x": b"bytes"}, TypeError),
        ({"type": "t", "x": "\ud800"}, ValueError),
        ({"type": "t", "x": "a" * MAX_BODY}, ValueError),
    ],
)
def test_encode_body_refuses(body: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_body(body)


def test_encode_message_checks_raw_bodies() -> None:
    raw = b'{"type":"ok"}'
    assert encode_message(raw) == b"m13" + raw
    for bad in (b'["type"]', b'{"type":"a","type":"b"}', b"{}", b'{"type":NaN}', b"\xff"):
        with pytest.raises(ValueError):
            encode_message(bad)


def test_encode_message_signature_bounds() -> None:
    with pytest.raises(ValueError):
        encode_message({"type": "t"}, signature=b"")
    with pytest.raises(ValueError):
        encode_message({"type": "t"}, signature=bytes(769))  # 1028 base64 characters
    assert encode_message({"type": "t"}, signature=bytes(768)).startswith(b"s13:1024{")


def test_encode_chunk_bounds() -> None:
    assert encode_chunk(b"abc") == b"3\nabc"
    assert encode_payload_end() == b"0\n"
    with pytest.raises(ValueError):
        encode_chunk(b"")
    assert encode_chunk_header(MAX_CHUNK) == b"16777216\n"
    with pytest.raises(ValueError):
        encode_chunk_header(MAX_CHUNK + 1)
    with pytest.raises(TypeError):
        encode_chunk_header(True)


# -- decoder behaviour ----------------------------------------------------------


def test_one_byte_at_a_time() -> None:
    stream = DRAFT_SIGNED_PAYLOAD + DRAFT_PAYLOAD + DRAFT_SIGNED
    decoder = Decoder()
    events: list[Any] = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i : i + 1])
        events.extend(decoder.events())
    payload = b"".join(e.data for e in events if isinstance(e, PayloadChunk))
    assert [e.kind for e in events if isinstance(e, Message)] == ["$", "!", "s"]
    assert payload == (
        b"Another example of possibly binary data\n"
        b"This is just text, but could be binary data!\nThis is more binary data\n"
    )
    assert decoder.at_boundary and decoder.offset == len(stream)


def test_large_chunk_is_streamed_in_pieces() -> None:
    """A 16 MiB chunk arriving in 64 KiB reads is handed out read by read."""
    decoder = Decoder()
    decoder.receive_data(encode_message({"type": "file"}, payload=True))
    assert isinstance(decoder.next_event(), Message)
    decoder.receive_data(encode_chunk_header(MAX_CHUNK))
    assert decoder.next_event() is NEED_DATA
    piece = bytes(range(256)) * 256  # 64 KiB
    total = 0
    for _ in range(MAX_CHUNK // len(piece)):
        decoder.receive_data(piece)
        event = decoder.next_event()
        assert isinstance(event, PayloadChunk) and event.data == piece
        assert decoder.next_event() is NEED_DATA  # nothing held back, nothing buffered
        total += len(event.data)
    assert total == MAX_CHUNK
    decoder.receive_data(encode_payload_end())
    assert decoder.next_event() == PayloadEnd()


def test_delivery_is_capped_by_max_delivery() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes in one chunk, fed at once
    stream = encode_message({"type": "f"}, payload=True) + encode_chunk(data) + b"0\n"
    events = decode_all(stream, Limits(max_delivery=1000))
    pieces = [e.data for e in events if isinstance(e, PayloadChunk)]
    assert [len(p) for p in pieces] == [1000] * 10 + [240]
    assert b"".join(pieces) == data


def test_clean_eof_and_truncation() -> None:
    assert decode_all(b"") == []
    assert len(decode_all(DRAFT_PAYLOAD)) == 4
    for cut in range(1, len(DRAFT_PAYLOAD)):
        decoder = Decoder()
        decoder.receive_data(DRAFT_PAYLOAD[:cut])
        decoder.receive_data(b"")
        events = []
        with pytest.raises(WireError) as info:
            while (event := decoder.next_event()) is not NEED_DATA:
                events.append(event)
        assert info.value.offset == cut
        assert "stream ended" in str(info.value)
        # everything complete before the cut was still delivered
        if cut >= 47:
            assert isinstance(events[0], Message)


def test_error_is_sticky() -> None:
    decoder = Decoder()
    decoder.receive_data(DRAFT_SIGNED + b"x")
    assert isinstance(decoder.next_event(), Message)
    with pytest.raises(WireError) as first:
        decoder.next_event()
    assert first.value.offset == len(DRAFT_SIGNED)
    for call in (decoder.next_event, lambda: decoder.receive_data(DRAFT_SIGNED)):
        with pytest.raises(WireError) as again:
            call()
        assert again.value.offset == first.value.offset
        assert str(again.value) == str(first.value)


def test_error_types() -> None:
    assert issubclass(WireError, ProtocolError) and issubclass(ProtocolError, CsembedError)
    err = wire_error(b"?")
    assert err.offset == 0 and err.reason.startswith("unknown message prefix")
    assert str(err).endswith("(at byte 0)")


def test_data_after_eof_is_a_caller_bug() -> None:
    decoder = Decoder()
    decoder.receive_data(b"")
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"m")


# -- error offsets: the byte named is the byte that is wrong -------------------------

HEADER_CASES = [
    (b"x12{}", 0, "unknown message prefix"),
    (b" m12{", 0, "unknown message prefix"),
    (b"m{}", 1, "expected the digits of the body length"),
    (b"m-12{", 1, "expected the digits of the body length"),
    (b"m+12{", 1, "expected the digits of the body length"),
    (b"m 12{", 1, "expected the digits of the body length"),
    (b"m012{", 1, "leading zero"),
    (b"m00{", 1, "leading zero"),
    (b"m12 {", 3, "must start with '{'"),
    (b"m12[", 3, "must start with '{'"),
    (b"m1{", 1, "too short"),
    (b"m0{", 1, "too short"),
    (b"s12{", 3, "expected ':'"),
    (b"s12:{", 4, "expected the digits of the signature length"),
    (b"s12:6{", 4, "not a positive multiple of 4"),
    (b"s12:0{", 4, "not a positive multiple of 4"),
    (b"$12:88x", 6, "must start with '{'"),
    (b"s12:1028", 7, "signature length exceeds"),
    (b"m9" * 3, 2, "must start with '{'"),
    (b"m" + b"9" * 100, 8, "body length exceeds"),
    (b"m16777217", 8, "body length exceeds"),
]


@pytest.mark.parametrize(("data", "offset", "reason"), HEADER_CASES)
def test_header_errors(data: bytes, offset: int, reason: str) -> None:
    # no EOF: every one of these must be detected from the bytes alone
    err = wire_error(data, eof=False)
    assert err.offset == offset, err
    assert reason in err.reason


@pytest.mark.parametrize(("data", "offset", "reason"), HEADER_CASES)
def test_error_offsets_are_absolute(data: bytes, offset: int, reason: str) -> None:
    prefix = DRAFT_PAYLOAD + DRAFT_SIGNED
    err = wire_error(prefix + data, eof=False)
    assert err.offset == len(prefix) + offset


def _chunked(chunk_part: bytes) -> bytes:
    return b'!12{"type":"f"}' + chunk_part


CHUNK_CASES = [
    (b"01\nx", 0, "leading zero"),
    (b"-1\n", 0, "expected the digits of the chunk length"),
    (b"\n", 0, "expected the digits of the chunk length"),
    (b"5 \n", 1, "expected LF after the chunk length"),
    (b"5\r\nabcde", 1, "expected LF after the chunk length"),
    (b"3\nabc4x", 6, "expected LF after the chunk length"),
    (b"3\nabcx", 5, "expected the digits of the chunk length"),
    (b"16777217\n", 7, "chunk length exceeds"),
]


@pytest.mark.parametrize(("part", "offset", "reason"), CHUNK_CASES)
def test_chunk_errors(part: bytes, offset: int, reason: str) -> None:
    err = wire_error(_chunked(part), eof=False)
    assert err.offset == 15 + offset
    assert reason in err.reason


def _body(text: bytes, prefix: bytes = b"m") -> bytes:
    return prefix + b"%d" % len(text) + text


@pytest.mark.parametrize(
    ("text", "offset", "reason"),
    [
        (b'{"type":"a",\xff"b":1}', 12, "not valid UTF-8"),
        (b'{"type":"\xc3"}', 9, "not valid UTF-8"),
        (b'{"type":"a","b":}', 16, "invalid JSON"),
        (b'{"type":"\xc3\xa9",}', 13, "invalid JSON"),  # offset counts bytes, not characters
        (b'{"type":"a"}{}', 12, "invalid JSON"),
        (b'{"type":"a",', 12, "invalid JSON"),
        (b'{"type":"a","b":NaN}', 0, "NaN is not allowed"),
        (b'{"type":"a","b":-Infinity}', 0, "-Infinity is not allowed"),
        (b'{"type":"a","b":1e999}', 0, "overflows"),
        (b'{"type":"a","type":"b"}', 0, "duplicate key 'type'"),
        (b'{"type":"a","b":[{"c":1,"c":2}]}', 0, "duplicate key 'c'"),
        (b'{"type":"a","b":"\\ud800"}', 0, "lone surrogate"),
        (b'{"type":"a","\\udc00":1}', 0, "lone surrogate"),
        (b'{"typo":"a"}', 0, '"type"'),
        (b'{"type":1}', 0, '"type"'),
        (b'{"type":""}', 0, '"type"'),
        (b'{"type":"a","n":' + b"1" * 5000 + b"}", 0, "refused"),
        (b'{"type":"a","n":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 0, "nested too deeply"),
        (b'{"type":"a","c":"\x01"}', 17, "invalid JSON"),
    ],
)
def test_body_errors(text: bytes, offset: int, reason: str) -> None:
    data = _body(text)
    header_len = len(data) - len(text)
    err = wire_error(data)
    assert err.offset == header_len + offset, err
    assert reason in err.reason


def test_body_accepts_exact_json() -> None:
    values = [2**63 - 1, -(2**63), 2**64, 10**40, -(10**40), 0.5, -0.0, True, None]
    text = json.dumps({"type": "t", "v": values, "s": "\ud83d\ude00 é \u2028"}).encode()
    (msg,) = decode_all(_body(text))
    assert msg.body["v"] == values
    assert [type(v) for v in msg.body["v"]] == [type(v) for v in values]
    assert msg.body["s"] == "\U0001f600 é \u2028"


SIGNATURE_CASES = [
    (b"AAA*", 3, "not base64"),
    (b"A=AA", 2, "not base64"),
    (b"A===", 3, "not base64"),
    (b"A\nAA", 1, "not base64"),
]


@pytest.mark.parametrize(("sig", "offset", "reason"), SIGNATURE_CASES)
def test_signature_errors(sig: bytes, offset: int, reason: str) -> None:
    head = b's12:4{"type":"a"}'
    err = wire_error(head + sig + b"\n")
    assert err.offset == len(head) + offset
    assert reason in err.reason


def test_signature_needs_lf_and_valid_padding() -> None:
    head = b's12:4{"type":"a"}'
    err = wire_error(head + b"AAAAm", eof=False)
    assert err.offset == len(head) + 4 and "expected LF after the signature" in err.reason
    err = wire_error(head + b"A==A\n")
    assert err.offset == len(head) + 3
    err = wire_error(head + b"AA=A\n")
    assert err.offset == len(head) + 3
    assert decode_all(head + b"AA==\n")[0].signature == b"\x00"


# -- limits -------------------------------------------------------------------------


def test_limits_validate() -> None:
    for bad in (
        {"max_body": MAX_BODY + 1},
        {"max_body": 1},
        {"max_chunk": 0},
        {"max_delivery": 0},
        {"max_signature": 2000},
    ):
        with pytest.raises(ValueError):
            Limits(**bad)
    with pytest.raises(TypeError):
        Limits(max_body=True)


def test_body_just_over_ceiling_refused_on_its_header() -> None:
    limits = Limits(max_body=100)
    decoder = Decoder(limits)
    decoder.receive_data(b"m10")
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"1")  # 101: refused before a single body byte is sent
    with pytest.raises(WireError) as info:
        decoder.next_event()
    assert info.value.offset == 3 and "limit of 100" in info.value.reason
    # exactly at the ceiling is fine
    text = b'{"type":"t","pad":"' + b"x" * 79 + b'"}'
    assert len(text) == 100
    (msg,) = decode_all(_body(text), limits)
    assert msg.raw == text
    assert wire_error(_body(text[:-1] + b" }"), limits).offset == 3


def test_default_ceiling_is_the_draft_limit() -> None:
    decoder = Decoder()
    decoder.receive_data(b"m16777216{")
    assert decoder.next_event() is NEED_DATA  # allowed; waits for the body
    assert wire_error(b"m16777217").offset == 8


def test_chunk_ceiling() -> None:
    limits = Limits(max_chunk=4096)
    events = decode_all(_chunked(b"4096\n" + bytes(4096) + b"0\n"), limits)
    assert sum(len(e.data) for e in events if isinstance(e, PayloadChunk)) == 4096
    err = wire_error(_chunked(b"4097"), limits, eof=False)
    assert err.offset == 15 + 3 and "limit of 4096" in err.reason


def test_signature_ceiling() -> None:
    limits = Limits(max_signature=88)
    sig = bytes(64)
    ok = encode_message({"type": "t"}, signature=sig)
    assert decode_all(ok, limits)[0].signature == sig
    too_long = encode_message({"type": "t"}, signature=bytes(67))  # 92 characters
    assert "signature length exceeds" in wire_error(too_long, limits).reason


# -- property: encode then decode with random split points round-trips ---------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
bodies = st.builds(
    lambda t, rest: {**rest, "type": t},
    st.text(min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=10), json_value, max_size=5),
)
messages = st.tuples(
    bodies,
    st.none() | st.binary(min_size=1, max_size=100),
    st.none() | st.lists(st.binary(min_size=1, max_size=300), max_size=4),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(messages, min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    delivery=st.integers(min_value=1, max_value=512),
)
def test_round_trip_with_random_splits(
    batch: list[tuple[dict[str, Any], bytes | None, list[bytes] | None]],
    cuts: list[int],
    delivery: int,
) -> None:
    stream = b""
    for body, sig, chunks in batch:
        stream += encode_message(body, signature=sig, payload=chunks is not None)
        for chunk in chunks or ():
            stream += encode_chunk(chunk)
        if chunks is not None:
            stream += encode_payload_end()
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = Decoder(Limits(max_delivery=delivery))
    events: list[Any] = []
    for start, end in zip(points, points[1:], strict=False):
        decoder.receive_data(stream[start:end])
        events.extend(decoder.events())
    decoder.receive_data(b"")
    events.extend(decoder.events())
    assert decoder.at_boundary and decoder.offset == len(stream)

    got: list[tuple[Message, bytearray | None]] = []
    for event in events:
        if isinstance(event, Message):
            got.append((event, bytearray() if event.has_payload else None))
        elif isinstance(event, PayloadChunk):
            assert 0 < len(event.data) <= delivery
            payload_so_far = got[-1][1]
            assert payload_so_far is not None
            payload_so_far += event.data
        else:
            assert isinstance(event, PayloadEnd)
    assert len(got) == len(batch)
    for (msg, payload), (body, sig, chunks) in zip(got, batch, strict=True):
        assert msg.body == json.loads(json.dumps(body))  # JSON has lists, not tuples
        assert msg.raw == encode_body(body)
        assert msg.signature == sig
        assert payload == (None if chunks is None else b"".join(chunks))
        kinds = {(False, False): "m", (False, True): "!", (True, False): "s", (True, True): "$"}
        assert msg.kind == kinds[(sig is not None, chunks is not None)]
