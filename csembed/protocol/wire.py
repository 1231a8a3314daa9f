"""ClearSkies wire format: framing of JSON messages, signatures and binary payloads.

Theory of operation
-------------------
A connection carries a sequence of messages (``protocol/wire.md`` has the exact
grammar and why it was chosen)::

    m<N>{...N bytes of JSON...}
    !<N>{...JSON...} then chunks  <L>\\n<L bytes> ... 0\\n
    s<N>:<S>{...JSON...}<S base64 chars>\\n
    $<N>:<S>{...JSON...}<S base64 chars>\\n then chunks

:class:`Decoder` is sans-I/O: the caller feeds whatever bytes arrived with
:meth:`Decoder.receive_data` and pulls events with :meth:`Decoder.next_event`
until it returns :data:`NEED_DATA`. Events are a :class:`Message` (header,
JSON body and signature all checked), then for ``!``/``$`` messages any number
of :class:`PayloadChunk` pieces and one :class:`PayloadEnd`. Payload bytes are
handed out as they arrive, at most ``Limits.max_delivery`` at a time, so a
16 MiB chunk never has to sit in memory whole. Only the JSON body (bounded by
``Limits.max_body``) and the signature (``Limits.max_signature``) are buffered.

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

The encoder functions produce exactly what the decoder accepts: the body is
compact UTF-8 JSON (``type`` first, other keys sorted) followed by one LF that
the body length counts, as in the draft's examples.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, NoReturn

from csembed.errors import ProtocolError
from csembed.need_data import NEED_DATA, NeedData
from csembed.protocol.jsonvalues import is_strict_int

__all__ = [
    "MAX_BODY",
    "MAX_CHUNK",
    "MAX_SIGNATURE_TEXT",
    "NEED_DATA",
    "Decoder",
    "NeedData",
    "Event",
    "Limits",
    "Message",
    "PayloadChunk",
    "PayloadEnd",
    "WireError",
    "check_shape",
    "default_max_elements",
    "encode_body",
    "encode_chunk",
    "encode_chunk_header",
    "encode_message",
    "encode_payload_end",
    "parse_body",
]

MIB: Final = 1 << 20
MAX_BODY: Final = 16 * MIB
"""core.md: "The maximum size for the JSON body is 16777216 bytes"."""
MAX_CHUNK: Final = 16 * MIB
"""core.md: "The size for each chunk shall be no greater than 16777216 bytes"."""
MAX_SIGNATURE_TEXT: Final = 1024
MAX_DEPTH: Final = 64
"""Our bound on the nesting of arrays and objects in a body (the draft's use 3 or 4)."""
"""Our bound on the base64 signature text; Ed25519 needs 88 characters."""
_MIN_BODY: Final = 2  # the shortest JSON object, "{}"

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


class WireError(ProtocolError):
    """The peer's byte stream breaks the wire format.

    ``offset`` is the absolute stream offset (0 = first byte ever received) of
    the byte that was wrong, or of the end of the stream for a truncation.
    ``reason`` is the message without the offset suffix.
    """

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset




@dataclass(frozen=True)
class Message:
    """One message: its JSON body and, for signed kinds, the signature.

    ``raw`` holds the exact body bytes as received or sent -- a signature
    covers exactly these bytes, never a re-encoding of ``body``.
    ``signature`` is the decoded signature (``s`` and ``$``), else ``None``.
    ``has_payload`` is true for ``!`` and ``$``; the decoder then follows the
    message with :class:`PayloadChunk` events and one :class:`PayloadEnd`.
    """

    body: dict[str, Any]
    raw: bytes
    signature: bytes | None = None
    has_payload: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.body, dict):
            raise TypeError("Message.body must be a dict")
        if not isinstance(self.body.get("type"), str) or not self.body["type"]:
            raise ValueError('Message.body needs a non-empty string "type"')
        if not isinstance(self.raw, bytes):
            raise TypeError("Message.raw must be bytes")
        if self.signature is not None and (
            not isinstance(self.signature, bytes) or not self.signature
        ):
            raise ValueError("Message.signature must be non-empty bytes or None")

    @property
    def kind(self) -> str:
        """The header prefix: ``m``, ``!``, ``s`` or ``$``."""
        if self.signature is None:
            return "!" if self.has_payload else "m"
        return "$" if self.has_payload else "s"

    @property
    def type(self) -> str:
        """The body's ``type`` member, e.g. ``"core.greeting"``."""
        return str(self.body["type"])


@dataclass(frozen=True)
class PayloadChunk:
    """Payload bytes, in arrival order; a piece of a wire chunk, never empty."""

    data: bytes


@dataclass(frozen=True)
class PayloadEnd:
    """The zero-length chunk that ends a binary payload."""


Event = Message | PayloadChunk | PayloadEnd
"""What :meth:`Decoder.next_event` returns besides :data:`NEED_DATA`."""


@dataclass(frozen=True)
class Limits:
    """Ceilings the decoder enforces on a peer.

    The defaults are the draft's maxima; a constrained board passes smaller
    ``max_body``/``max_chunk`` and ``max_delivery`` (the largest piece of
    payload handed out at once, i.e. the most payload bytes copied per event).
    ``max_elements`` (0: :func:`default_max_elements` of ``max_body``) and
    ``max_depth`` bound the shape of a JSON body (see :func:`parse_body`).
    """

    max_body: int = MAX_BODY
    max_chunk: int = MAX_CHUNK
    max_delivery: int = 64 * 1024
    max_signature: int = MAX_SIGNATURE_TEXT
    max_elements: int = 0
    max_depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        checks = (
            ("max_body", self.max_body, _MIN_BODY, MAX_BODY),
            ("max_chunk", self.max_chunk, 1, MAX_CHUNK),
            ("max_delivery", self.max_delivery, 1, MAX_CHUNK),
            ("max_signature", self.max_signature, 4, MAX_SIGNATURE_TEXT),
            ("max_elements", self.max_elements, 0, MAX_BODY),
            ("max_depth", self.max_depth, 1, 1000),
        )
        for name, value, low, high in checks:
            if not is_strict_int(value):
                raise TypeError(f"Limits.{name} must be an int")
            if not low <= value <= high:
                raise ValueError(f"Limits.{name}={value} is outside {low}..{high}")


    @property
    def element_limit(self) -> int:
        """``max_elements``, or its default for ``max_body``."""
        return self.max_elements or default_max_elements(self.max_body)


def default_max_elements(max_body: int) -> int:
    """Values and keys a body of ``max_body`` bytes may hold by default: one per
    16 bytes (at least 1024). Real messages average far more bytes per element
    (hex digests, names, timestamps); a body of ``{},{},...`` would otherwise
    cost about 25 times its size in Python objects, this caps it near 5 times."""
    return max(1024, max_body // 16)


class _State(Enum):
    HEADER = "message header"
    BODY = "JSON body"
    SIGNATURE = "signature"
    CHUNK_HEADER = "payload chunk header"
    CHUNK_DATA = "payload chunk"
    BROKEN = "error"


def _byte(value: int) -> str:
    return repr(bytes([value]))


class _JsonRejected(Exception):
    """Raised from JSON parser hooks; carries the reason."""


def _reject_constant(name: str) -> NoReturn:
    raise _JsonRejected(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonRejected(f"number {text[:40]} overflows a double")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _JsonRejected(f"duplicate key {key[:60]!r} in a JSON object")
            seen.add(key)
    return obj


_JSON = json.JSONDecoder(
    object_pairs_hook=_unique_object,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    strict=True,
)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_ONLY_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


def _elements_bound(raw: bytes) -> tuple[int, int]:
    """Upper bounds on (values and keys, opening brackets) in JSON text ``raw``."""
    opening = raw.count(b"[") + raw.count(b"{")
    return raw.count(b",") + raw.count(b":") + opening + 1, opening


def check_shape(raw: bytes, max_elements: int, max_depth: int, offset: int = 0) -> None:
    """Refuse, before parsing, a body with more than ``max_elements`` values and
    keys or nested deeper than ``max_depth``: parsed, each element is a Python
    object many times its size in text. Counting is by bytes.count at C speed;
    only when that coarse bound is exceeded are strings blanked out (they may
    hold commas and brackets) and the structure counted exactly, and nesting
    measured by peeling empty pairs off the brackets, one level per pass."""
    elements, opening = _elements_bound(raw)
    if elements <= max_elements and opening <= max_depth:
        return
    structure = _JSON_STRING.sub(b'""', raw)
    elements, opening = _elements_bound(structure)
    if elements > max_elements:
        raise WireError(f"JSON body refused: more than {max_elements} values and keys "
                        f"(about {elements})", offset)
    if opening <= max_depth:
        return
    brackets = structure.translate(None, _ONLY_BRACKETS)
    for _ in range(max_depth):
        peeled = _EMPTY_PAIR.sub(b"", brackets)
        if len(peeled) == len(brackets):
            return  # unbalanced: the parser reports where
        brackets = peeled
    if brackets and _EMPTY_PAIR.search(brackets):
        raise WireError(f"JSON body refused: nested too deeply (over {max_depth} levels)",
                        offset)


def parse_body(raw: bytes, offset: int = 0, *, max_elements: int | None = None,
               max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse and check a message body; ``offset`` is its position in the stream.

    The body must be UTF-8 JSON text holding one object with a non-empty
    string ``type``; NaN/Infinity, numbers that overflow a double, duplicate
    keys and escapes that leave a lone UTF-16 surrogate are refused, and so
    is a body with more than ``max_elements`` values and keys (default:
    :func:`default_max_elements` of the draft's largest body) or nested deeper than
    ``max_depth`` (:func:`check_shape`, before parsing). Integers are parsed
    exactly. Raises :class:`WireError` naming the offending byte where that
    is known, otherwise the body's first byte.
    """
    check_shape(raw, default_max_elements(MAX_BODY) if max_elements is None else max_elements,
                max_depth, offset)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("JSON body is not valid UTF-8", offset + exc.start) from None
    if not text.startswith("{"):
        raise WireError("JSON body must start with '{'", offset)
    try:
        value = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        where = offset + len(text[: exc.pos].encode("utf-8"))
        raise WireError(f"invalid JSON body: {exc.msg}", where) from None
    except _JsonRejected as exc:
        raise WireError(f"JSON body refused: {exc}", offset) from None
    except (ValueError, RecursionError) as exc:
        # int() digit limit, or nesting deeper than the interpreter allows.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:80]
        raise WireError(f"JSON body refused: {reason}", offset) from None
    if b"\\u" in raw and _has_lone_surrogate(value):
        raise WireError("JSON body refused: \\u escape leaves a lone surrogate", offset)
    if not isinstance(value, dict):  # pragma: no cover - guarded by the '{' check
        raise WireError("JSON body is not an object", offset)
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise WireError('JSON body has no non-empty string "type" member', offset)
    return value


class Decoder:
    """Incremental, sans-I/O decoder for one direction of a connection.

    Feed bytes with :meth:`receive_data` in any split, then call
    :meth:`next_event` until it returns :data:`NEED_DATA`. Memory held is at
    most one body, one signature and the received buffers that still hold
    bytes not yet pulled.
    """

    def __init__(self, limits: Limits = Limits()) -> None:
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
                and _MIN_BODY <= body_len <= limits.max_body
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
        if body_len < _MIN_BODY:
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


# -- encoding ----------------------------------------------------------------


_MAX_DEPTH: Final = 200


def _check_keys(value: Any) -> None:
    """Refuse non-str keys, which ``json`` would silently turn into strings.

    ``{1: "a", "1": "b"}`` would otherwise go out with a duplicate key that
    every peer (and our own decoder) refuses. Types ``json`` cannot encode at
    all, and NaN, are left to the encoder, which raises for them.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(f"body is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
                if isinstance(child, Mapping | list | tuple):
                    stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend(
                (child, depth + 1) for child in item if isinstance(child, Mapping | list | tuple)
            )


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Encode a body exactly as it goes on the wire.

    Compact JSON, UTF-8, ``type`` first and every other key (at every level)
    sorted, then one LF; the LF is part of the body and counted by its length,
    which reproduces the draft's examples byte for byte. Raises ``TypeError``
    or ``ValueError`` for a body the protocol cannot carry (no string ``type``,
    non-str keys, NaN, lone surrogates, over 16 MiB).
    """
    if not isinstance(body, Mapping):
        raise TypeError("a message body must be a mapping")
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValueError('a message body needs a non-empty string "type"')
    _check_keys(body)
    try:
        rest = _ENCODER.encode({k: v for k, v in body.items() if k != "type"})
        text = '{"type":' + _ENCODER.encode(kind) + ("}" if rest == "{}" else "," + rest[1:])
        raw = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("body holds a string with a lone surrogate") from None
    if len(raw) > MAX_BODY:
        raise ValueError(f"encoded body is {len(raw)} bytes, over the {MAX_BODY} limit")
    return raw


def encode_message(
    body_or_raw: Mapping[str, Any] | bytes,
    *,
    signature: bytes | None = None,
    payload: bool = False,
) -> bytes:
    """Encode a message header, its body and, if given, its signature.

    ``body_or_raw`` is a mapping (encoded with :func:`encode_body`) or the
    exact body bytes -- pass the bytes that were signed. Raw bytes are checked
    with the decoder's own rules, so we never send what we would refuse.
    With ``payload=True`` the message is ``!``/``$`` and the caller must follow
    it with :func:`encode_chunk` pieces and :func:`encode_payload_end`.
    """
    if isinstance(body_or_raw, bytes | bytearray | memoryview):
        raw = bytes(body_or_raw)
        if len(raw) > MAX_BODY:
            raise ValueError(f"body is {len(raw)} bytes, over the {MAX_BODY} limit")
        try:
            parse_body(raw)
        except WireError as exc:
            raise ValueError(f"raw body would be refused by a peer: {exc}") from None
    else:
        raw = encode_body(body_or_raw)
    if signature is None:
        prefix = b"!" if payload else b"m"
        return b"%s%d%s" % (prefix, len(raw), raw)
    if not isinstance(signature, bytes | bytearray | memoryview) or not signature:
        raise ValueError("signature must be non-empty bytes")
    text = binascii.b2a_base64(bytes(signature), newline=False)
    if len(text) > MAX_SIGNATURE_TEXT:
        raise ValueError(f"signature needs {len(text)} base64 characters, over the limit")
    prefix = b"$" if payload else b"s"
    return b"%s%d:%d%s%s\n" % (prefix, len(raw), len(text), raw, text)


def encode_chunk_header(length: int) -> bytes:
    """The header of a payload chunk of ``length`` bytes (1..16 MiB).

    Lets a sender write large chunks straight from a file without joining
    header and data into one new bytes object.
    """
    if not is_strict_int(length):
        raise TypeError("chunk length must be an int")
    if not 1 <= length <= MAX_CHUNK:
        raise ValueError(f"chunk length {length} is outside 1..{MAX_CHUNK}")
    return b"%d\n" % length


def encode_chunk(data: bytes) -> bytes:
    """One payload chunk: its length, LF, the data (non-empty, <= 16 MiB)."""
    return encode_chunk_header(len(data)) + bytes(data)


def encode_payload_end() -> bytes:
    """The zero-length chunk that ends a payload."""
    return b"0\n"
