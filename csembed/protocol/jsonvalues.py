"""Exact JSON values the draft relies on: 64-bit integers and nanosecond timestamps.

Theory of operation
-------------------
core.md says sizes and similar fields are 64-bit integers carried as plain JSON
numbers, and datetimes are ISO 8601 strings with nanosecond precision
(``"2014-03-30T12:35:29.113243778Z"``). Python's ``json`` already parses
integers exactly, so the integer side only needs a strict check: a bool, a
float (``1.0``, ``1e3``) or anything outside the signed 64-bit range is a
protocol violation, not something to round.

Timestamps are handled as integer nanoseconds since the Unix epoch (UTC),
never as ``datetime`` or float, so no precision is lost. We always write the
canonical form -- UTC, ``Z``, nine fraction digits -- and accept what other
writers plausibly send: 0-9 fraction digits, ``Z`` or a numeric offset
(``+05:30``, ``+0530``, ``+05``), lower-case ``t``/``z``. A timestamp without a
zone is refused (it would mean "some local time"), as are leap seconds (``:60``)
and more than nine fraction digits (they cannot round-trip). Results must fit in
a signed 64-bit count of nanoseconds (years 1677..2262), like every integer on
the wire.

Values come from peers, so the checks raise :class:`JsonValueError`, a
:class:`~csembed.errors.ProtocolError`; ``what`` names the field in the message.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Final, TypeGuard

from csembed.errors import ProtocolError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "JsonValueError",
    "check_int64",
    "format_timestamp",
    "is_strict_int",
    "parse_timestamp",
]

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
NS_PER_SECOND: Final = 1_000_000_000
_EPOCH: Final = _dt.datetime(1970, 1, 1)

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})"
    r"(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)",
    re.ASCII,
)


class JsonValueError(ProtocolError):
    """A JSON value from a peer has the wrong type, range or format."""


def is_strict_int(value: object) -> TypeGuard[int]:
    """True for a JSON integer: an ``int`` that is not a ``bool``.

    ``json.loads`` gives ``True``/``False`` as bools, which Python counts as
    ints; every integer field of every message is read through this (or
    :func:`check_int64`), so ``true`` is never taken for 1.
    """
    return isinstance(value, int) and not isinstance(value, bool)


def check_int64(
    value: Any,
    what: str = "value",
    *,
    minimum: int = INT64_MIN,
    maximum: int = INT64_MAX,
) -> int:
    """Return ``value`` if it is a JSON integer within ``minimum..maximum``.

    ``minimum``/``maximum`` narrow the signed 64-bit range (e.g. ``minimum=0``
    for sizes). Bools and floats are refused even when integral.
    """
    if not is_strict_int(value):
        raise JsonValueError(f"{what} must be an integer, got {type(value).__name__}")
    low = max(minimum, INT64_MIN)
    high = min(maximum, INT64_MAX)
    if not low <= value <= high:
        raise JsonValueError(f"{what} = {value} is outside {low}..{high}")
    return value


def format_timestamp(ns: int) -> str:
    """Format nanoseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``.

    Any signed 64-bit value is accepted; others raise ``ValueError``.
    """
    if not is_strict_int(ns):
        raise TypeError("timestamp must be an int count of nanoseconds")
    if not INT64_MIN <= ns <= INT64_MAX:
        raise ValueError(f"timestamp {ns} ns is outside the signed 64-bit range")
    seconds, fraction = divmod(ns, NS_PER_SECOND)
    moment = _EPOCH + _dt.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


_PARSED_MAX: Final = 256
_parsed: dict[str, int] = {}  # text -> ns of recent good timestamps (a file's mtime is read
# as its record arrives, is planned, fetched and landed: the same text, parsed once)


def parse_timestamp(text: Any, what: str = "timestamp") -> int:
    """Parse an ISO 8601 timestamp into integer nanoseconds since the epoch (UTC)."""
    if isinstance(text, str):
        known = _parsed.get(text)
        if known is not None:
            return known
    ns = _parse_timestamp(text, what)
    if len(_parsed) >= _PARSED_MAX:
        del _parsed[next(iter(_parsed))]
    _parsed[text] = ns
    return ns


def _parse_timestamp(text: Any, what: str) -> int:
    if not isinstance(text, str):
        raise JsonValueError(f"{what} must be a string, got {type(text).__name__}")
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 48 else text[:45] + "..."
        raise JsonValueError(
            f"{what} {shown!r} is not an ISO 8601 date-time like 2014-03-30T12:35:29.113243778Z"
        )
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, off_hours, off_minutes = match.group(7, 8, 9, 10, 11)
    if second == 60:
        raise JsonValueError(f"{what} {text!r} is a leap second, which cannot be represented")
    try:
        moment = _dt.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise JsonValueError(f"{what} {text!r} is not a real date-time: {exc}") from None
    offset = 0
    if not zulu:
        oh = int(off_hours)
        om = int(off_minutes or 0)
        if oh > 23 or om > 59:
            raise JsonValueError(f"{what} {text!r} has an impossible UTC offset")
        offset = (oh * 3600 + om * 60) * (-1 if sign == "-" else 1)
    delta = moment - _EPOCH
    seconds = delta.days * 86400 + delta.seconds - offset
    ns = seconds * NS_PER_SECOND + int((fraction or "0").ljust(9, "0"))
    if not INT64_MIN <= ns <= INT64_MAX:
        raise JsonValueError(f"{what} {text!r} is outside the 64-bit nanosecond range")
    return ns
