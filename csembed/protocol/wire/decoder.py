"""The incremental, sans-I/O decoder of one direction of a connection.

Theory of operation
-------------------
The caller feeds whatever bytes arrived with :meth:`Decoder.receive_data`
and pulls events with :meth:`Decoder.next_event` until :data:`NEED_DATA`;
payload bytes go out as they arrive, at most ``Limits.max_delivery`` at a
time, and only a body and a signature are ever buffered whole.

Received ``bytes`` are kept as they are, in a list, with the offset of the
first unconsumed byte; headers are parsed where they lie. A payload piece
inside one received buffer is sliced out of it (one copy), or is that buffer
itself when it covers it exactly (no copy), which is the common case for a
secure-session record or a socket read in the middle of a large chunk. Bytes
spread over several buffers are joined once. Short reads are copied onto a
growing tail buffer instead, so tiny reads cost neither an object each nor
a tiny event each.

Every length in a header is checked against its limit digit by digit, so an
oversized body or chunk is refused on its header, before any of it is
buffered. Anything malformed raises :class:`WireError` with the absolute
stream offset of the offending byte; the decoder then stays broken and raises
the same error on every later call, because after a framing error the byte
stream cannot be resynchronised.
"""

from __future__ import annotations

import binascii
import re
from collections import deque
from collections.abc import Iterator
from enum import Enum
from typing import Any, Final, NoReturn

from csembed.need_data import NEED_DATA, NeedData
from csembed.protocol.wire.body_json import parse_body
from csembed.protocol.wire.events import (
    MIN_BODY,
    Event,
    Limits,
    Message,
    PayloadChunk,
    PayloadEnd,
    WireError,
)

_PREFIX_SIGNED: Final = b"s$"
_PREFIX_PAYLOAD: Final = b"!$"
_PREFIXES: Final = b"m!s$"
_DIGITS: Final = frozenset(b"0123456789")
_LBRACE: Final = ord("{")
_COLON: Final = ord(":")
_LF: Final = ord("\n")
_ZERO: Final = ord("0")
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
# Well-formed headers in canonical form (no leading zeros, lengths of at most
# 8 and 4 digits), matched in one go; the limits are checked on the numbers.
_HEADER = re.compile(rb"[ms!$]([1-9][0-9]{0,7})(?::([1-9][0-9]{0,3}))?\{")
_CHUNK_HEADER = re.compile(rb"(0|[1-9][0-9]{0,7})\n")
# Longer than any header the limits allow ("$16777216:1024{" is 16 bytes) plus
# the one digit too many that is refused, so a header never needs more than this.
_HEADER_WINDOW: Final = 32
# A payload piece is cut from one received buffer when that buffer holds at
# least this much of it; smaller remainders are joined with the next buffers
# so that many tiny reads do not become many tiny events.
_MIN_PIECE: Final = 4096
# Reads shorter than this are copied onto a growing bytearray at the end of the
# buffer list (up to _TAIL_MAX bytes each) instead of being kept one object
# per read, so a peer sending tiny records cannot make the per-object overhead
# of CPython (about 40 bytes) multiply the memory a pending body takes.
_SMALL_READ: Final = 1024
_TAIL_MAX: Final = 64 * 1024

_Buffer = bytes | bytearray  # a bytearray only as the last, growing buffer


def _cut(buf: _Buffer, start: int, stop: int) -> bytes:
    """``buf[start:stop]`` as bytes with one copy, or none for a whole bytes."""
    if type(buf) is bytes:
        return buf if start == 0 and stop == len(buf) else buf[start:stop]
    return bytes(memoryview(buf)[start:stop])


_DEFAULT_LIMITS: Final = Limits()


class _State(Enum):
    HEADER = "message header"
    BODY = "JSON body"
    SIGNATURE = "signature"
    CHUNK_HEADER = "payload chunk header"
    CHUNK_DATA = "payload chunk"
    BROKEN = "error"


def _byte(value: int) -> str:
    return repr(bytes([value]))


class Decoder:
    """Incremental, sans-I/O decoder for one direction of a connection.

    Feed bytes with :meth:`receive_data` in any split, then call
    :meth:`next_event` until it returns :data:`NEED_DATA`. Memory held is at
    most one body, one signature and the received buffers that still hold
    bytes not yet pulled.
    """

    def __init__(self, limits: Limits = _DEFAULT_LIMITS) -> None:
        if not isinstance(limits, Limits):
            raise TypeError("limits must be a Limits")
        self.limits = limits
        # Received buffers in order; the first has its first _pos bytes consumed.
        self._bufs: deque[_Buffer] = deque()
        self._pos = 0
        self._size = 0  # bytes buffered and not yet consumed
        self._base = 0  # stream offset of the first unconsumed byte
        self._state = _State.HEADER
        self._eof = False
        self._error: WireError | None = None
        self._prefix = 0
        self._body_len = 0
        self._sig_len = 0
        self._pending: tuple[dict[str, Any], bytes] | None = None  # body awaiting signature
        self._chunk_left = 0

    @property
    def offset(self) -> int:
        """Stream offset of the next byte not yet decoded into an event."""
        return self._base

    @property
    def at_boundary(self) -> bool:
        """True between messages: nothing partial is buffered or expected."""
        return self._state is _State.HEADER and not self._size

    def receive_data(self, data: bytes) -> None:
        """Append ``data`` from the peer; ``b""`` marks the end of the stream.

        ``bytes`` of 1 KiB or more are kept by reference, not copied (payload
        pieces are cut straight from them); other buffers are copied once,
        because the caller may reuse them, and short reads are joined. A
        stream that ends mid-message makes :meth:`next_event` raise
        :class:`WireError` once every complete event before the cut has been
        returned. Raises the stored :class:`WireError` if the decoder already
        failed; feeding data after the end of the stream is a caller bug
        (``RuntimeError``).
        """
        if self._error is not None or self._eof:
            self._raise_if_broken()
            if data:
                raise RuntimeError("receive_data() after end of stream")
            return
        if not data:
            self._eof = True
            return
        if isinstance(data, bytes):
            size = len(data)
        else:
            data = memoryview(data)  # any buffer, counted in bytes; copied below
            size = data.nbytes
        bufs = self._bufs
        if size >= _SMALL_READ:
            bufs.append(data if isinstance(data, bytes) else bytes(data))
        else:
            tail = bufs[-1] if bufs else None
            if type(tail) is bytearray and len(tail) < _TAIL_MAX:
                tail += data
            else:
                bufs.append(bytearray(data))
        self._size += size

    def next_event(self) -> Event | NeedData:
        """Return the next complete event, or :data:`NEED_DATA`.

        Raises :class:`WireError` on malformed input, and again on every call
        after that.
        """
        self._raise_if_broken()
        try:
            event = self._step()
        except WireError as exc:
            self._break(exc)
            raise
        if event is NEED_DATA and self._eof and not self.at_boundary:
            self._fail(f"stream ended inside a {self._state.value}", self._size)
        return event

    def events(self) -> Iterator[Event]:
        """Yield events until the decoder needs more data."""
        while True:
            event = self.next_event()
            if isinstance(event, NeedData):
                return
            yield event

    # -- internals ---------------------------------------------------------

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise WireError(self._error.reason, self._error.offset)

    def _break(self, exc: WireError) -> None:
        self._state = _State.BROKEN
        self._error = exc
        self._bufs.clear()
        self._pos = self._size = 0

    def _fail(self, reason: str, index: int) -> NoReturn:
        """Raise for the byte ``index`` bytes past the first unconsumed one."""
        exc = WireError(reason, self._base + index)
        self._break(exc)
        raise exc

    def _front(self, want: int) -> tuple[_Buffer, int, int]:
        """The first buffered bytes as one buffer: ``(buffer, start, end)``.

        ``buffer[start:end]`` holds at least ``min(want, buffered)`` bytes.
        That is the first received buffer itself unless it holds fewer than
        ``want`` and more follow; then up to ``want`` bytes are joined (the
        callers ask for a header's or a signature's worth, a few dozen bytes).
        Needs at least one byte buffered.
        """
        bufs = self._bufs
        first = bufs[0]
        pos = self._pos
        if len(first) - pos >= want or len(bufs) == 1:
            return first, pos, len(first)
        parts: list[memoryview] = []
        left = want
        for index, buf in enumerate(bufs):
            part = memoryview(buf)[pos:pos + left] if index == 0 else memoryview(buf)[:left]
            parts.append(part)
            left -= len(part)
            if not left:
                break
        joined = b"".join(parts)
        return joined, 0, len(joined)

    def _skip(self, count: int) -> None:
        """Consume ``count`` buffered bytes that were already parsed."""
        bufs = self._bufs
        self._size -= count
        self._base += count
        pos = self._pos + count
        while bufs and pos >= len(bufs[0]):
            pos -= len(bufs.popleft())
        self._pos = pos

    def _take(self, count: int) -> bytes:
        """Consume and return ``count`` buffered bytes (0 < count <= buffered).

        Bytes inside the first received buffer are sliced from it (a received
        ``bytes`` that is wanted whole is returned as is); only bytes spread
        over several buffers are joined. Either way each byte is copied at
        most once.
        """
        bufs = self._bufs
        first = bufs[0]
        pos = self._pos
        end = pos + count
        if end < len(first):
            piece = _cut(first, pos, end)
            self._pos = end
        elif end == len(first):
            piece = _cut(first, pos, end)
            bufs.popleft()
            self._pos = 0
        else:
            parts: list[_Buffer | memoryview] = [memoryview(first)[pos:]]
            bufs.popleft()
            left = end - len(first)
            while left >= len(bufs[0]):  # whole buffers go in as they are
                buf = bufs.popleft()
                parts.append(buf)
                left -= len(buf)
                if not left:
                    break
            if left:
                parts.append(memoryview(bufs[0])[:left])
            self._pos = left
            piece = b"".join(parts)
        self._size -= count
        self._base += count
        return piece

    def _step(self) -> Event | NeedData:
        state = self._state
        if state is _State.CHUNK_DATA:
            return self._read_chunk_data()
        if state is _State.CHUNK_HEADER:
            return self._read_chunk_header()
        if state is _State.HEADER:
            return self._read_header()
        if state is _State.BODY:
            return self._read_body()
        return self._read_signature()

    def _decimal(
        self, buf: _Buffer, origin: int, end: int, start: int, limit: int, what: str
    ) -> tuple[int, int] | None:
        """Parse a decimal length at ``buf[start]``; return (terminator index, value).

        ``buf[origin]`` is the first unconsumed byte and ``end`` the end of
        what is buffered. Returns None if the digits may continue past the
        bytes buffered so far. The value is compared to ``limit`` after every
        digit, so at most len(str(limit)) + 1 digits are ever looked at.
        """
        if start >= end:
            return None
        if buf[start] not in _DIGITS:
            self._fail(
                f"expected the digits of the {what}, got {_byte(buf[start])}", start - origin
            )
        value = 0
        i = start
        while i < end and buf[i] in _DIGITS:
            if i > start and value == 0:
                self._fail(f"{what} has a leading zero", start - origin)
            value = value * 10 + buf[i] - _ZERO
            if value > limit:
                self._fail(f"{what} exceeds the limit of {limit} bytes", i - origin)
            i += 1
        if i == end:
            return None
        return i, value

    def _read_header(self) -> Event | NeedData:
        if not self._size:
            return NEED_DATA
        buf, origin, end = self._front(_HEADER_WINDOW)
        limits = self.limits
        matched = _HEADER.match(buf, origin, end)
        if matched is not None:  # fast path; anything it does not accept is parsed slowly
            prefix = buf[origin]
            body_len = int(matched[1])
            sig_text = matched[2]
            sig_len = 0 if sig_text is None else int(sig_text)
            if not (
                (sig_text is None) is (prefix not in _PREFIX_SIGNED)
                and MIN_BODY <= body_len <= limits.max_body
                and sig_len <= limits.max_signature
                and not sig_len % 4
            ):
                matched = None
        if matched is None:
            header = self._parse_header(buf, origin, end)
            if header is None:
                return NEED_DATA
            prefix, body_len, sig_len, size = header
        else:
            size = matched.end() - 1 - origin
        self._skip(size)
        self._prefix = prefix
        self._body_len = body_len
        self._sig_len = sig_len
        self._state = _State.BODY
        return self._read_body()

    def _parse_header(
        self, buf: _Buffer, origin: int, end: int
    ) -> tuple[int, int, int, int] | None:
        """Check a message header byte by byte, raising for the first bad byte.

        Returns ``(prefix, body length, signature length, header size)``
        (the size does not count the body's ``{``), or None if incomplete.
        """
        prefix = buf[origin]
        if prefix not in _PREFIXES:
            self._fail(f"unknown message prefix {_byte(prefix)}, expected one of m ! s $", 0)
        limits = self.limits
        parsed = self._decimal(buf, origin, end, origin + 1, limits.max_body, "body length")
        if parsed is None:
            return None
        i, body_len = parsed
        sig_len = 0
        if prefix in _PREFIX_SIGNED:
            if buf[i] != _COLON:
                self._fail(
                    f"expected ':' and the signature length, got {_byte(buf[i])}", i - origin
                )
            parsed = self._decimal(
                buf, origin, end, i + 1, limits.max_signature, "signature length"
            )
            if parsed is None:
                return None
            i, sig_len = parsed
            if sig_len == 0 or sig_len % 4:
                self._fail(
                    f"signature length {sig_len} is not a positive multiple of 4", i - 1 - origin
                )
        if buf[i] != _LBRACE:
            self._fail(f"JSON body must start with '{{', got {_byte(buf[i])}", i - origin)
        if body_len < MIN_BODY:
            self._fail(f"body length {body_len} is too short for a JSON object", i - 1 - origin)
        return prefix, body_len, sig_len, i - origin

    def _read_body(self) -> Event | NeedData:
        if self._size < self._body_len:
            return NEED_DATA
        start = self._base
        raw = self._take(self._body_len)
        body = parse_body(raw, start, max_elements=self.limits.element_limit,
                          max_depth=self.limits.max_depth)
        if self._prefix in _PREFIX_SIGNED:
            self._pending = (body, raw)
            self._state = _State.SIGNATURE
            return self._read_signature()
        return self._emit(body, raw, None)

    def _read_signature(self) -> Event | NeedData:
        sig_len = self._sig_len
        if self._size <= sig_len:
            return NEED_DATA
        buf, origin, _ = self._front(sig_len + 1)
        stop = origin + sig_len
        matched = _BASE64_TEXT.match(buf, origin, stop)
        assert matched is not None  # the pattern also matches the empty string
        if matched.end() != stop:
            bad = matched.end()
            self._fail(f"signature is not base64: unexpected {_byte(buf[bad])}", bad - origin)
        if buf[stop] != _LF:
            self._fail(f"expected LF after the signature, got {_byte(buf[stop])}", sig_len)
        try:
            signature = binascii.a2b_base64(buf[origin:stop], strict_mode=True)
        except binascii.Error as exc:
            self._fail(f"signature is not valid base64: {exc}", 0)
        self._skip(sig_len + 1)
        assert self._pending is not None
        body, raw = self._pending
        self._pending = None
        return self._emit(body, raw, signature)

    def _emit(self, body: dict[str, Any], raw: bytes, signature: bytes | None) -> Message:
        has_payload = self._prefix in _PREFIX_PAYLOAD
        self._state = _State.CHUNK_HEADER if has_payload else _State.HEADER
        return Message(body=body, raw=raw, signature=signature, has_payload=has_payload)

    def _read_chunk_header(self) -> Event | NeedData:
        if not self._size:
            return NEED_DATA
        buf, origin, end = self._front(_HEADER_WINDOW)
        matched = _CHUNK_HEADER.match(buf, origin, end)
        if matched is not None and (length := int(matched[1])) <= self.limits.max_chunk:
            size = matched.end() - origin
        else:  # incomplete or malformed: find the first bad byte
            parsed = self._decimal(
                buf, origin, end, origin, self.limits.max_chunk, "chunk length"
            )
            if parsed is None:
                return NEED_DATA
            i, length = parsed
            if buf[i] != _LF:
                self._fail(f"expected LF after the chunk length, got {_byte(buf[i])}", i - origin)
            size = i + 1 - origin
        self._skip(size)
        if length == 0:
            self._state = _State.HEADER
            return PayloadEnd()
        self._chunk_left = length
        self._state = _State.CHUNK_DATA
        return self._read_chunk_data()

    def _read_chunk_data(self) -> Event | NeedData:
        if not self._size:
            return NEED_DATA
        count = min(self._size, self._chunk_left, self.limits.max_delivery)
        in_first = len(self._bufs[0]) - self._pos
        if in_first < count and in_first >= _MIN_PIECE:
            # Hand out the first buffer's bytes uncopied rather than join them to the next.
            count = in_first
        data = self._take(count)
        self._chunk_left -= count
        if self._chunk_left == 0:
            self._state = _State.CHUNK_HEADER
        return PayloadChunk(data)
