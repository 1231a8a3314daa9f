"""A small HTTP/1.1 request parser and response encoder, sans-I/O.

Theory of operation
-------------------
:class:`RequestParser` takes bytes (:meth:`~RequestParser.receive_data`) and
yields one :class:`Request` from :meth:`~RequestParser.next_event`, or
:data:`NEED_DATA` until the request is complete. It serves one request per
connection (the server always answers ``Connection: close``), so it never
has to find where a second request starts.

Everything is bounded before it is buffered, since the port may face the LAN:
the request line (:attr:`Limits.request_line`), the whole head
(:attr:`Limits.head`), the number of header fields (:attr:`Limits.headers`)
and the body (:attr:`Limits.body`, declared by ``Content-Length``; chunked
transfer coding is refused, as it is not needed by the page). A violation
raises :class:`HttpError` carrying the status to answer (400, 405, 411, 413,
414, 431, 501, 505) as soon as the bytes seen prove it, not after buffering
more. Header names are checked against RFC 9110's token grammar and values
may not hold control characters (no NUL, no bare CR or LF: no header
injection or request smuggling through odd line endings). Bare LF line
endings are accepted (RFC 9112 section 2.2 allows it); obsolete line folding is
refused. The parser never looks at the clock: the server bounds time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote

from csembed.errors import CsembedError
from csembed.need_data import NEED_DATA, NeedData

__all__ = ["NEED_DATA", "HttpError", "Limits", "Request", "RequestParser", "encode_response"]

MAX_QUERY_FIELDS: Final = 16

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET: Final = re.compile(rb"/[\x21-\x7e]*")
_METHODS: Final = frozenset({"GET", "HEAD", "POST"})
_REASONS: Final = {200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request",
                   401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                   405: "Method Not Allowed", 408: "Request Timeout",
                   411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
                   415: "Unsupported Media Type", 429: "Too Many Requests",
                   431: "Request Header Fields Too Large", 500: "Internal Server Error",
                   501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
                   505: "HTTP Version Not Supported"}


class HttpError(CsembedError):
    """A request that cannot be served; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, in bytes (and header fields)."""

    request_line: int = 2048
    head: int = 8192  #: request line plus every header line
    headers: int = 32
    body: int = 4096

    def __post_init__(self) -> None:
        if not 16 <= self.request_line <= self.head or self.headers < 1 or self.body < 0:
            raise ValueError(f"inconsistent HTTP limits: {self}")


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower-case; repeated ones are refused
    for the fields we rely on (``host``, ``content-length``...)."""

    method: str
    target: str  #: the raw request target, e.g. ``/api/status?x=1``
    path: str  #: the target's path, percent-decoded
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), ``None`` if absent."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


# Fields that must not appear twice: two Host or Content-Length values are
# the classic way to make two parsers disagree about a request.
_SINGLE: Final = frozenset({"host", "content-length", "content-type", "origin",
                            "authorization", "cookie", "x-csrf-token"})


class RequestParser:
    """Parses one HTTP/1.1 request; see the module docstring."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = bytearray()
        self._head: tuple[str, str, tuple[tuple[str, str], ...]] | None = None
        self._body_length = 0
        self._done = False

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the connection."""
        if self._done:
            return  # one request per connection; anything after it is ignored
        self._buffer += data
        if self._head is None:
            self._check_head_bounds()
        elif len(self._buffer) > self._body_length:
            del self._buffer[self._body_length:]  # a pipelined request: not served

    def next_event(self) -> Request | NeedData:
        """The request once complete, else :data:`NEED_DATA`. Raises :class:`HttpError`."""
        if self._done:
            return NEED_DATA
        if self._head is None:
            end = _head_end(self._buffer)
            if end is None:
                return NEED_DATA
            head_bytes = bytes(self._buffer[:end])
            del self._buffer[: _skip_blank(self._buffer, end)]
            self._head = self._parse_head(head_bytes)
            if len(self._buffer) > self._body_length:
                del self._buffer[self._body_length:]
        if len(self._buffer) < self._body_length:
            return NEED_DATA
        method, target, headers = self._head
        self._done = True
        path, _, query = target.partition("?")
        try:
            fields = tuple(parse_qsl(query, max_num_fields=MAX_QUERY_FIELDS))
        except ValueError:
            raise HttpError(400, f"more than {MAX_QUERY_FIELDS} query fields") from None
        return Request(method=method, target=target, path=unquote(path, errors="strict"),
                       query=fields, headers=headers,
                       body=bytes(self._buffer[: self._body_length]))

    # -- head ----------------------------------------------------------------------

    def _check_head_bounds(self) -> None:
        buf = self._buffer
        line_end = buf.find(b"\n")
        if (line_end < 0 and len(buf) > self.limits.request_line) or \
                line_end > self.limits.request_line:
            raise HttpError(414, f"request line longer than {self.limits.request_line} bytes")
        if _head_end(buf) is None and len(buf) > self.limits.head:
            raise HttpError(431, f"request head longer than {self.limits.head} bytes")
        if buf.count(b"\n") > self.limits.headers + 2 and _head_end(buf) is None:
            raise HttpError(431, f"more than {self.limits.headers} header fields")

    def _parse_head(self, head: bytes) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        if len(head) > self.limits.head:
            raise HttpError(431, f"request head longer than {self.limits.head} bytes")
        lines = head.split(b"\n")
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        method, target = self._request_line(lines[0])
        fields = lines[1:]
        if len(fields) > self.limits.headers:
            raise HttpError(431, f"more than {self.limits.headers} header fields")
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        for line in fields:
            name, value = _header(line)
            if name in _SINGLE:
                if name in seen:
                    raise HttpError(400, f"header {name!r} appears more than once")
                seen.add(name)
            headers.append((name, value))
        self._body_length = self._content_length(method, dict(headers))
        return method, target, tuple(headers)

    def _request_line(self, line: bytes) -> tuple[str, str]:
        parts = line.split(b" ")
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        method_b, target_b, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            if re.fullmatch(rb"HTTP/\d\.\d", version):
                raise HttpError(505, "only HTTP/1.0 and 1.1 are served")
            raise HttpError(400, "malformed request line")
        if not _TOKEN.fullmatch(method_b):
            raise HttpError(400, "malformed method")
        method = method_b.decode("ascii")
        if method not in _METHODS:
            raise HttpError(405 if method.isupper() else 400,
                            f"method {method[:16]!r} is not served")
        if not _TARGET.fullmatch(target_b):
            raise HttpError(400, "request target must be an absolute path")
        target = target_b.decode("ascii")
        try:
            unquote(target.partition("?")[0], errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "request path is not UTF-8") from None
        return method, target

    def _content_length(self, method: str, headers: dict[str, str]) -> int:
        if "transfer-encoding" in headers:
            raise HttpError(501, "transfer codings are not accepted; send Content-Length")
        text = headers.get("content-length")
        if text is None:
            if method == "POST":
                raise HttpError(411, "a POST needs a Content-Length")
            return 0
        if not text.isdigit() or len(text) > 12:
            raise HttpError(400, "malformed Content-Length")
        length = int(text)
        if length > self.limits.body:
            raise HttpError(413, f"request body longer than {self.limits.body} bytes")
        return length


def _head_end(buf: bytearray) -> int | None:
    """Where the head ends (index of the blank line's start), ``None`` if not yet."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    ends = [i for i in (crlf, lf) if i >= 0]
    return min(ends) if ends else None


def _skip_blank(buf: bytearray, end: int) -> int:
    return end + (4 if buf[end:end + 4] == b"\r\n\r\n" else 2)


def _header(line: bytes) -> tuple[str, str]:
    if not line or line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete line folding or empty header line")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        raise HttpError(400, "malformed header field")
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise HttpError(400, f"control character in header {name.decode('ascii')[:40]!r}")
    return name.decode("ascii").lower(), value.decode("latin-1")


def encode_response(status: int, headers: list[tuple[str, str]], body: bytes = b"", *,
                    head_only: bool = False) -> bytes:
    """A complete response: status line, ``headers`` plus length and close, body.

    Header values come from us, but are still refused if they hold a CR or LF.
    """
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"line break in response header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
