"""64-bit integers and nanosecond ISO 8601 timestamps (csembed.protocol.jsonvalues)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from csembed.errors import ProtocolError
from csembed.protocol.jsonvalues import (
    INT64_MAX,
    INT64_MIN,
    JsonValueError,
    check_int64,
    format_timestamp,
    parse_timestamp,
)
from csembed.protocol.wire import Decoder, Message, encode_message

DRAFT_MTIME = "2014-03-30T12:35:29.113243778Z"  # core.md, "Datetime Values"
DRAFT_SIZE = 3762440519426216896  # core.md, "64-bit Integers in JSON"


def _ns(moment: dt.datetime, extra_ns: int = 0) -> int:
    """Independent reference: exact ns via timedelta integer fields."""
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return ((delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds) * 1000 + extra_ns


def test_draft_timestamp_round_trips() -> None:
    expected = _ns(dt.datetime(2014, 3, 30, 12, 35, 29, 113243, tzinfo=dt.UTC), 778)
    assert parse_timestamp(DRAFT_MTIME) == expected
    assert format_timestamp(expected) == DRAFT_MTIME


def test_draft_values_survive_the_wire() -> None:
    body = {"type": "t", "size": DRAFT_SIZE, "mtime": DRAFT_MTIME, "max": INT64_MAX}
    decoder = Decoder()
    decoder.receive_data(encode_message(body))
    msg = decoder.next_event()
    assert isinstance(msg, Message)
    assert check_int64(msg.body["size"], "size", minimum=0) == DRAFT_SIZE
    assert check_int64(msg.body["max"]) == INT64_MAX
    assert format_timestamp(parse_timestamp(msg.body["mtime"])) == DRAFT_MTIME


@pytest.mark.parametrize(
    ("text", "moment", "extra_ns"),
    [
        ("2014-03-30T12:35:29Z", dt.datetime(2014, 3, 30, 12, 35, 29), 0),
        ("2014-03-30T12:35:29.1Z", dt.datetime(2014, 3, 30, 12, 35, 29, 100000), 0),
        ("2014-03-30T12:35:29.000000001Z", dt.datetime(2014, 3, 30, 12, 35, 29), 1),
        ("2014-03-30t12:35:29.5z", dt.datetime(2014, 3, 30, 12, 35, 29, 500000), 0),
        ("2014-03-30T14:35:29.113243778+02:00", dt.datetime(2014, 3, 30, 12, 35, 29, 113243), 778),
        ("2014-03-30T07:05:29-0530", dt.datetime(2014, 3, 30, 12, 35, 29), 0),
        ("2014-03-31T00:35:29+12", dt.datetime(2014, 3, 30, 12, 35, 29), 0),
        ("1969-12-31T23:59:59.999999999Z", dt.datetime(1969, 12, 31, 23, 59, 59, 999999), 999),
        ("2000-02-29T00:00:00Z", dt.datetime(2000, 2, 29), 0),
    ],
)
def test_parse_accepts(text: str, moment: dt.datetime, extra_ns: int) -> None:
    assert parse_timestamp(text) == _ns(moment.replace(tzinfo=dt.UTC), extra_ns)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2014-03-30T12:35:29", "ISO 8601"),  # no zone: local time is ambiguous
        ("2014-03-30 12:35:29Z", "ISO 8601"),
        ("2014-03-30T12:35:29.1234567891Z", "ISO 8601"),  # ten fraction digits
        ("2014-03-30T12:35:29.Z", "ISO 8601"),
        ("2014-3-30T12:35:29Z", "ISO 8601"),
        ("２014-03-30T12:35:29Z", "ISO 8601"),  # non-ASCII digit
        ("2014-03-30T12:35:29Z ", "ISO 8601"),
        ("2016-12-31T23:59:60Z", "leap second"),
        ("2014-02-29T00:00:00Z", "not a real date"),
        ("2014-13-01T00:00:00Z", "not a real date"),
        ("2014-03-30T24:00:00Z", "not a real date"),
        ("2014-03-30T12:35:29+24:00", "impossible UTC offset"),
        ("2014-03-30T12:35:29+05:60", "impossible UTC offset"),
        ("2263-01-01T00:00:00Z", "64-bit"),
        ("1677-09-21T00:12:43.145224191Z", "64-bit"),
        (1396182929, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_parse_refuses(value: Any, why: str) -> None:
    with pytest.raises(JsonValueError, match=why):
        parse_timestamp(value, "mtime")


def test_format_edges() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_timestamp(-1) == "1969-12-31T23:59:59.999999999Z"
    assert format_timestamp(INT64_MIN) == "1677-09-21T00:12:43.145224192Z"
    assert format_timestamp(INT64_MAX) == "2262-04-11T23:47:16.854775807Z"
    with pytest.raises(ValueError):
        format_timestamp(INT64_MAX + 1)
    with pytest.raises(TypeError):
        format_timestamp(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_timestamp(True)


@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_timestamp_round_trip(ns: int) -> None:
    text = format_timestamp(ns)
    assert len(text) == 30 and text.endswith("Z")
    assert parse_timestamp(text) == ns


@given(
    st.datetimes(
        min_value=dt.datetime(1678, 1, 1),
        max_value=dt.datetime(2262, 1, 1),
        timezones=st.timezones(),
    )
)
def test_parse_matches_datetime(moment: dt.datetime) -> None:
    # isoformat gives microseconds and an offset such as +05:30 (or +00:00)
    offset = moment.utcoffset()
    # historical zones have offsets with seconds, which ISO 8601 cannot write
    assume(offset is not None and offset.seconds % 60 == 0 and not offset.microseconds)
    assert parse_timestamp(moment.isoformat()) == _ns(moment)


def test_check_int64() -> None:
    assert check_int64(0) == 0
    assert check_int64(INT64_MIN) == INT64_MIN
    assert check_int64(7, minimum=0, maximum=7) == 7
    for bad in (True, False, 1.0, 1e3, "1", None, [1]):
        with pytest.raises(JsonValueError, match="must be an integer"):
            check_int64(bad, "size")
    for bad_int in (INT64_MAX + 1, INT64_MIN - 1, 2**64):
        with pytest.raises(JsonValueError, match="outside"):
            check_int64(bad_int)
    with pytest.raises(JsonValueError, match="size = -1 is outside 0"):
        check_int64(-1, "size", minimum=0)
    # a float that JSON decoding produced from "1.0" is refused, not rounded
    with pytest.raises(JsonValueError):
        check_int64(json.loads("1.0"))
    assert issubclass(JsonValueError, ProtocolError)
