"""Newline-delimited JSON framing for the control protocol, sans-I/O.

Theory of operation
-------------------
Each control message is one JSON text on one line (control.md: "JSON
messages, with all newline characters removed"). :class:`LineDecoder` splits
the incoming bytes into :class:`Line` events, accepting LF or CRLF endings (a
serial terminal may send CR LF). A line longer than ``max_line`` bytes is not
buffered: the decoder reports :class:`LineTooLong` as soon as the limit is
crossed -- in order with the lines around it, so its error reply lands where
the request's reply would have -- then discards bytes up to the next LF, and
carries on with the line after it. Memory held is at most ``max_line`` bytes
plus what was fed and not yet pulled.

:func:`encode_line` writes a reply as compact ASCII JSON (escapes keep it
7-bit clean for serial lines and never contain a raw newline) plus LF.
:func:`parse_json_line` reads a request line strictly: UTF-8, no NaN or
Infinity, no duplicate keys, bounded nesting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from csembed.protocol.jsonvalues import is_strict_int
from csembed.protocol.wire import NEED_DATA, NeedData

__all__ = [
    "DEFAULT_MAX_LINE",
    "Line",
    "LineDecoder",
    "LineTooLong",
    "encode_line",
    "parse_json_line",
]

DEFAULT_MAX_LINE: Final = 64 * 1024
"""Longest request line accepted, in bytes, without its line ending."""


@dataclass(frozen=True)
class Line:
    """One complete line, without its LF or CRLF."""

    data: bytes


@dataclass(frozen=True)
class LineTooLong:
    """A line exceeded ``limit`` bytes; the rest of it is being discarded."""

    limit: int


LineEvent = Line | LineTooLong


class LineDecoder:
    """Incremental line splitter with a length limit. See the module docstring."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if not is_strict_int(max_line) or max_line < 1:
            raise ValueError("max_line must be a positive int")
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no LF
        self._discarding = False

    def receive_data(self, data: bytes) -> None:
        """Append bytes; ``b""`` (end of stream) drops any unterminated line."""
        if not data:
            self._buf.clear()
            self._scanned = 0
            return
        self._buf += data

    def next_event(self) -> LineEvent | NeedData:
        """The next line, a :class:`LineTooLong`, or ``NEED_DATA``."""
        buf = self._buf
        while True:
            end = buf.find(b"\n", self._scanned)
            if self._discarding:
                if end < 0:
                    buf.clear()
                    self._scanned = 0
                    return NEED_DATA
                del buf[: end + 1]
                self._scanned = 0
                self._discarding = False
                continue
            if end < 0:
                if len(buf) > self.max_line + 1:  # +1: a CR whose LF is still on its way
                    buf.clear()
                    self._scanned = 0
                    self._discarding = True
                    return LineTooLong(self.max_line)
                self._scanned = len(buf)
                return NEED_DATA
            line_end = end - 1 if end and buf[end - 1] == 0x0D else end
            if line_end > self.max_line:
                del buf[: end + 1]
                self._scanned = 0
                return LineTooLong(self.max_line)
            line = bytes(buf[:line_end])
            del buf[: end + 1]
            self._scanned = 0
            return Line(line)

    def events(self) -> Iterator[LineEvent]:
        """Yield events until more data is needed."""
        while (event := self.next_event()) is not NEED_DATA:
            assert not isinstance(event, NeedData)
            yield event


def encode_line(obj: Any) -> bytes:
    """``obj`` as one line of compact ASCII JSON plus LF (``ValueError``/``TypeError``
    if it is not JSON)."""
    return json.dumps(obj, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":")).encode("ascii") + b"\n"


class _Refused(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} is not valid JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused("duplicate key in a JSON object")
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_refuse_constant)


def parse_json_line(line: bytes) -> Any:
    """Parse one line of JSON; ``ValueError`` with a short reason if it is not."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"line is not UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise ValueError(str(exc)[:100]) from None
