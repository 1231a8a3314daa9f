"""Issue 10 item 3: a JSON body's shape is bounded before it is parsed.

A body of ``{},{},...`` used to cost about 25 times its size once parsed (a
16 MiB body: ~400 MiB). The wire layer now counts values and keys (and
nesting) at C speed first and refuses what exceeds the bound with a clear
error; boards keep ``max_message`` within their RAM.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from csembed.board_profile import BoardError, iter_boards, load_board, parse_board
from csembed.protocol.wire import (
    MAX_DEPTH,
    Decoder,
    Limits,
    WireError,
    default_max_elements,
    encode_message,
    parse_body,
)

MiB = 1 << 20


def _empty_objects(size: int) -> bytes:
    n = (size - 30) // 3
    return b'{"type":"x","a":[' + b"{}," * (n - 1) + b"{}]}"


@pytest.mark.parametrize("size", [1 * MiB, 16 * MiB])
def test_a_body_of_empty_objects_is_refused_cheaply(size: int) -> None:
    raw = _empty_objects(size)
    tracemalloc.start()
    try:
        with pytest.raises(WireError, match="more than .* values and keys"):
            parse_body(raw, max_elements=default_max_elements(size))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(raw), f"checking cost {peak / len(raw):.1f}x the body"


def test_the_decoder_applies_the_boards_bound() -> None:
    board = load_board("wifi-piano")
    limits = Limits(max_body=board.memory.max_message)
    body = {"type": "x", "a": [0] * (limits.element_limit + 10)}
    decoder = Decoder(limits)
    decoder.receive_data(encode_message(body))
    with pytest.raises(WireError, match="values and keys"):
        decoder.next_event()
    fine = Decoder(limits)
    fine.receive_data(encode_message({"type": "x", "a": [0] * 1000}))
    assert fine.next_event().body["a"] == [0] * 1000  # type: ignore[union-attr]


def test_commas_and_brackets_inside_strings_do_not_count() -> None:
    text = ",:[{" * 100_000
    raw = json.dumps({"type": "x", "text": text}).encode()
    assert parse_body(raw, max_elements=16)["text"] == text


def test_nesting_is_bounded() -> None:
    def nested(depth: int) -> bytes:
        return b'{"type":"x","n":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    assert parse_body(nested(MAX_DEPTH))["type"] == "x"
    with pytest.raises(WireError, match="nested too deeply"):
        parse_body(nested(MAX_DEPTH + 1))
    # many shallow containers are fine
    wide = json.dumps({"type": "x", "a": [[1], {"b": [2]}] * 500}).encode()
    assert len(parse_body(wide)["a"]) == 1000


def test_default_element_bound_scales_with_the_body() -> None:
    assert default_max_elements(1 * MiB) == 65536
    assert default_max_elements(100) == 1024
    assert Limits(max_body=4 * MiB).element_limit == 4 * MiB // 16
    assert Limits(max_body=4 * MiB, max_elements=10).element_limit == 10


def test_every_board_keeps_its_bodies_within_its_ram() -> None:
    for board in iter_boards():
        m = board.memory
        assert m.max_message * m.max_connections * 16 <= board.ram, board.name
    piano = load_board("wifi-piano")
    data = {"board": {"name": "x", "description": "x", "ram": "64 MiB"},
            "memory": {**{k: v for k, v in vars(piano.memory).items()},
                       "max_message": "16 MiB", "max_connections": 4},
            "storage": vars(piano.storage), "network": vars(piano.network),
            "cpu": vars(piano.cpu)}
    with pytest.raises(BoardError, match="does not fit board.ram"):
        parse_board(data, "test.toml")
