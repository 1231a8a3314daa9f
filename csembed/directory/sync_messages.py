"""The directory.* and rsync.* messages: building them and checking what peers send.

Theory of operation
-------------------
Every message of the two extensions names content by ``sha256`` (never by
path: a path from a peer is never opened). Each message is a frozen dataclass in
the one message style (:mod:`csembed.protocol.body_message`): ``to_body()``
builds our bodies, ``from_body()`` checks a peer's field by field, and
:func:`parse` dispatches on :data:`MESSAGES`; the engine (:mod:`.engine`)
never reads a raw body itself. ``encode(Present(sha))`` frames one to send.

=========================  =========  ===================================================
type                       payload    fields
=========================  =========  ===================================================
directory.get_presence     --         --
directory.bloom_filter     filter     ``k_value`` (1-8)
directory.present          --         ``sha256``
directory.present_many     --         ``sha256s`` (1-512 of them; extension ``.present_many``)
directory.get              --         ``sha256``, optional ``range: [start, count]``
directory.data             content    ``sha256``, ``range`` when the request had one
directory.not_present      --         ``sha256``
directory.get_error        --         ``sha256``, ``message``
rsync.signature            signature  ``sha256`` (the wanted content), optional
                                      ``basis_sha256`` (what the signature is of)
rsync.patch                delta      ``sha256``
=========================  =========  ===================================================

A field that breaks its rule raises :class:`SyncMessageError` naming the
message and the field; the engine logs it and drops the message (the
connection goes on). Payload framing is the wire layer's business; here only
the flag ``has_payload`` is checked against each class's ``PAYLOAD``, so a ``directory.get``
carrying an attachment or a ``directory.data`` without one is refused too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from csembed.directory.errors import DirectoryError
from csembed.hex_ids import ID_DIGITS, lower_hex_of
from csembed.protocol.body_message import BodyMessage, encode, message_table
from csembed.protocol.jsonvalues import is_strict_int
from csembed.protocol.wire import Message

__all__ = [
    "BloomFilterHeader", "DataHeader", "Get", "GetError", "GetPresence", "MAX_PRESENT_MANY",
    "MESSAGES", "NotPresent", "PatchHeader", "Present", "PresentMany", "SignatureHeader",
    "SyncMessage",
    "SyncMessageError", "encode", "parse",
]

GET_PRESENCE: Final = "directory.get_presence"
BLOOM_FILTER: Final = "directory.bloom_filter"
PRESENT: Final = "directory.present"
PRESENT_MANY: Final = "directory.present_many"
GET: Final = "directory.get"
DATA: Final = "directory.data"
NOT_PRESENT: Final = "directory.not_present"
GET_ERROR: Final = "directory.get_error"
RSYNC_SIGNATURE: Final = "rsync.signature"
RSYNC_PATCH: Final = "rsync.patch"

DIRECTORY_TYPES: Final = frozenset(
    {GET_PRESENCE, BLOOM_FILTER, PRESENT, PRESENT_MANY, GET, DATA, NOT_PRESENT, GET_ERROR})
RSYNC_TYPES: Final = frozenset({RSYNC_SIGNATURE, RSYNC_PATCH})

MAX_ERROR_TEXT: Final = 1024  #: longest get_error message we keep (longer is cut)
MAX_PRESENT_MANY: Final = 512  #: hashes in one directory.present_many (~34 KiB of body)
#: The unofficial extension (core.md: names starting with ".") under which
#: peers send each other directory.present_many.
PRESENT_MANY_EXTENSION: Final = ".present_many"
INT64_MAX: Final = (1 << 63) - 1


class SyncMessageError(DirectoryError):
    """A directory.* or rsync.* message from a peer breaks its rules."""


def _sha(body: Mapping[str, Any], field: str, where: str) -> str:
    value = body.get(field)
    sha = lower_hex_of(value, ID_DIGITS)
    if sha is None:
        raise SyncMessageError(f"{where}: {field!r} must be 64 hex digits, got {value!r:.80}")
    return sha


def _range(body: Mapping[str, Any], where: str) -> tuple[int, int] | None:
    if "range" not in body or body["range"] is None:
        return None
    value = body["range"]
    if not isinstance(value, list) or len(value) != 2 or not all(
            is_strict_int(v) and 0 <= v <= INT64_MAX
            for v in value):
        raise SyncMessageError(f"{where}: 'range' must be [start, count] with two integers "
                               f"0..2^63-1, got {value!r:.80}")
    start, count = value
    if start + count > INT64_MAX:
        raise SyncMessageError(f"{where}: 'range' ends beyond 2^63-1")
    return start, count


def _with_range(body: dict[str, Any], range_: tuple[int, int] | None) -> dict[str, Any]:
    if range_ is not None:
        body["range"] = [range_[0], range_[1]]
    return body


# -- the messages -----------------------------------------------------------------------


@dataclass(frozen=True)
class GetPresence(BodyMessage):
    """``directory.get_presence``: answer with our bloom filter."""

    TYPE = GET_PRESENCE

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GetPresence:
        return cls()


@dataclass(frozen=True)
class BloomFilterHeader(BodyMessage):
    """``directory.bloom_filter``; the filter bytes follow as the payload."""

    TYPE = BLOOM_FILTER
    PAYLOAD = True
    k_value: int

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "k_value": self.k_value}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BloomFilterHeader:
        k = body.get("k_value")
        if not is_strict_int(k) or not 1 <= k <= 8:
            raise SyncMessageError(f"{cls.TYPE}: 'k_value' must be an integer 1..8, "
                                   f"got {k!r:.40}")
        return cls(k)


@dataclass(frozen=True)
class Present(BodyMessage):
    """``directory.present``: the peer now holds this content."""

    TYPE = PRESENT
    sha256: str

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sha256": self.sha256}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Present:
        return cls(_sha(body, "sha256", cls.TYPE))


@dataclass(frozen=True)
class PresentMany(BodyMessage):
    """``directory.present_many``: the peer now holds each of these contents (one
    message for a batch of ``directory.present``, sent only where both sides
    negotiated the ``.present_many`` extension)."""

    TYPE = PRESENT_MANY
    sha256s: tuple[str, ...]

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sha256s": list(self.sha256s)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PresentMany:
        value = body.get("sha256s")
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_PRESENT_MANY:
            raise SyncMessageError(f"{cls.TYPE}: 'sha256s' must be a list of 1..."
                                   f"{MAX_PRESENT_MANY} hashes, got {value!r:.80}")
        shas = []
        for item in value:
            sha = lower_hex_of(item, ID_DIGITS)
            if sha is None:
                raise SyncMessageError(f"{cls.TYPE}: every 'sha256s' item must be 64 hex "
                                       f"digits, got {item!r:.80}")
            shas.append(sha)
        return cls(tuple(shas))


@dataclass(frozen=True)
class Get(BodyMessage):
    """``directory.get``: send this content (``range`` = ``(start, count)`` or whole)."""

    TYPE = GET
    sha256: str
    range: tuple[int, int] | None = None

    def to_body(self) -> dict[str, Any]:
        return _with_range({"type": self.TYPE, "sha256": self.sha256}, self.range)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Get:
        return cls(_sha(body, "sha256", cls.TYPE), _range(body, cls.TYPE))


@dataclass(frozen=True)
class DataHeader(BodyMessage):
    """``directory.data``; the content bytes follow as the payload."""

    TYPE = DATA
    PAYLOAD = True
    sha256: str
    range: tuple[int, int] | None = None

    def to_body(self) -> dict[str, Any]:
        return _with_range({"type": self.TYPE, "sha256": self.sha256}, self.range)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DataHeader:
        return cls(_sha(body, "sha256", cls.TYPE), _range(body, cls.TYPE))


@dataclass(frozen=True)
class NotPresent(BodyMessage):
    """``directory.not_present``: the peer does not hold this content (now)."""

    TYPE = NOT_PRESENT
    sha256: str

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sha256": self.sha256}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NotPresent:
        return cls(_sha(body, "sha256", cls.TYPE))


@dataclass(frozen=True)
class GetError(BodyMessage):
    """``directory.get_error``: the peer cannot serve this content.

    ``message`` is cut to :data:`MAX_ERROR_TEXT` characters both ways.
    """

    TYPE = GET_ERROR
    sha256: str
    message: str

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sha256": self.sha256,
                "message": self.message[:MAX_ERROR_TEXT]}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GetError:
        text = body.get("message", "")
        if not isinstance(text, str):
            text = repr(text)
        return cls(_sha(body, "sha256", cls.TYPE), text[:MAX_ERROR_TEXT])


@dataclass(frozen=True)
class SignatureHeader(BodyMessage):
    """``rsync.signature``: a librsync signature of our basis follows."""

    TYPE = RSYNC_SIGNATURE
    PAYLOAD = True
    sha256: str
    basis_sha256: str | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.TYPE, "sha256": self.sha256}
        if self.basis_sha256 is not None:
            body["basis_sha256"] = self.basis_sha256
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SignatureHeader:
        basis = _sha(body, "basis_sha256", cls.TYPE) \
            if body.get("basis_sha256") is not None else None
        return cls(_sha(body, "sha256", cls.TYPE), basis)


@dataclass(frozen=True)
class PatchHeader(BodyMessage):
    """``rsync.patch``: a librsync delta producing ``sha256`` from our basis follows."""

    TYPE = RSYNC_PATCH
    PAYLOAD = True
    sha256: str

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "sha256": self.sha256}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PatchHeader:
        return cls(_sha(body, "sha256", cls.TYPE))


SyncMessage = (GetPresence | BloomFilterHeader | Present | PresentMany | Get | DataHeader
               | NotPresent | GetError | SignatureHeader | PatchHeader)

MESSAGES: Final[Mapping[str, type[SyncMessage]]] = message_table(
    (GetPresence, BloomFilterHeader, Present, PresentMany, Get, DataHeader, NotPresent,
     GetError, SignatureHeader, PatchHeader))
"""``type`` -> message class, for every directory.* and rsync.* message."""


def parse(message: Message) -> SyncMessage:
    """Check a directory.* / rsync.* message and return its parsed form."""
    cls = MESSAGES.get(message.type)
    if cls is None:
        raise SyncMessageError(f"{message.type!r} is not a directory or rsync message")
    if message.has_payload != cls.PAYLOAD:
        raise SyncMessageError(f"{cls.TYPE}: " + ("must carry a binary payload" if cls.PAYLOAD
                                                  else "must not carry a binary payload"))
    return cls.from_body(message.body)
