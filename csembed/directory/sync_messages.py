"""The directory.* and rsync.* messages: building them and checking what peers send.

Theory of operation
-------------------
Every message of the two extensions names content by ``sha256`` (never by
path: a path from a peer is never opened). This module turns peer bodies into
small frozen dataclasses after checking each field, and builds our own
bodies; the engine (:mod:`.engine`) never reads a raw body itself.

=========================  =========  ===================================================
type                       payload    fields
=========================  =========  ===================================================
directory.get_presence     --         --
directory.bloom_filter     filter     ``k_value`` (1-8)
directory.present          --         ``sha256``
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
the flag ``has_payload`` is checked against the table, so a ``directory.get``
carrying an attachment or a ``directory.data`` without one is refused too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from csembed.directory.errors import DirectoryError
from csembed.hex_ids import ID_DIGITS, lower_hex_of
from csembed.protocol.jsonvalues import is_strict_int
from csembed.protocol.wire import Message, encode_message

GET_PRESENCE: Final = "directory.get_presence"
BLOOM_FILTER: Final = "directory.bloom_filter"
PRESENT: Final = "directory.present"
GET: Final = "directory.get"
DATA: Final = "directory.data"
NOT_PRESENT: Final = "directory.not_present"
GET_ERROR: Final = "directory.get_error"
RSYNC_SIGNATURE: Final = "rsync.signature"
RSYNC_PATCH: Final = "rsync.patch"

DIRECTORY_TYPES: Final = frozenset(
    {GET_PRESENCE, BLOOM_FILTER, PRESENT, GET, DATA, NOT_PRESENT, GET_ERROR})
RSYNC_TYPES: Final = frozenset({RSYNC_SIGNATURE, RSYNC_PATCH})
_WITH_PAYLOAD: Final = frozenset({BLOOM_FILTER, DATA, RSYNC_SIGNATURE, RSYNC_PATCH})

MAX_ERROR_TEXT: Final = 1024  #: longest get_error message we keep (longer is cut)
INT64_MAX: Final = (1 << 63) - 1


class SyncMessageError(DirectoryError):
    """A directory.* or rsync.* message from a peer breaks its rules."""


def _sha(body: dict[str, Any], field: str, where: str) -> str:
    value = body.get(field)
    sha = lower_hex_of(value, ID_DIGITS)
    if sha is None:
        raise SyncMessageError(f"{where}: {field!r} must be 64 hex digits, got {value!r:.80}")
    return sha


def _range(body: dict[str, Any], where: str) -> tuple[int, int] | None:
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


# -- parsed messages --------------------------------------------------------------------


@dataclass(frozen=True)
class GetPresence:
    """``directory.get_presence``: answer with our bloom filter."""


@dataclass(frozen=True)
class BloomFilterHeader:
    """``directory.bloom_filter``; the filter bytes follow as the payload."""

    k_value: int


@dataclass(frozen=True)
class Present:
    """``directory.present``: the peer now holds this content."""

    sha256: str


@dataclass(frozen=True)
class Get:
    """``directory.get``: send this content (``range`` = ``(start, count)`` or whole)."""

    sha256: str
    range: tuple[int, int] | None


@dataclass(frozen=True)
class DataHeader:
    """``directory.data``; the content bytes follow as the payload."""

    sha256: str
    range: tuple[int, int] | None


@dataclass(frozen=True)
class NotPresent:
    """``directory.not_present``: the peer does not hold this content (now)."""

    sha256: str


@dataclass(frozen=True)
class GetError:
    """``directory.get_error``: the peer cannot serve this content."""

    sha256: str
    message: str


@dataclass(frozen=True)
class SignatureHeader:
    """``rsync.signature``: a librsync signature of our basis follows."""

    sha256: str
    basis_sha256: str | None


@dataclass(frozen=True)
class PatchHeader:
    """``rsync.patch``: a librsync delta producing ``sha256`` from our basis follows."""

    sha256: str


SyncMessage = (GetPresence | BloomFilterHeader | Present | Get | DataHeader | NotPresent
               | GetError | SignatureHeader | PatchHeader)


def parse(message: Message) -> SyncMessage:
    """Check a directory.* / rsync.* message and return its parsed form."""
    kind = message.type
    body = message.body
    where = kind
    if kind not in DIRECTORY_TYPES and kind not in RSYNC_TYPES:
        raise SyncMessageError(f"{kind!r} is not a directory or rsync message")
    if message.has_payload != (kind in _WITH_PAYLOAD):
        raise SyncMessageError(f"{where}: " + ("must carry a binary payload"
                                               if kind in _WITH_PAYLOAD
                                               else "must not carry a binary payload"))
    if kind == GET_PRESENCE:
        return GetPresence()
    if kind == BLOOM_FILTER:
        k = body.get("k_value")
        if not is_strict_int(k) or not 1 <= k <= 8:
            raise SyncMessageError(f"{where}: 'k_value' must be an integer 1..8, got {k!r:.40}")
        return BloomFilterHeader(k)
    if kind == PRESENT:
        return Present(_sha(body, "sha256", where))
    if kind == GET:
        return Get(_sha(body, "sha256", where), _range(body, where))
    if kind == DATA:
        return DataHeader(_sha(body, "sha256", where), _range(body, where))
    if kind == NOT_PRESENT:
        return NotPresent(_sha(body, "sha256", where))
    if kind == GET_ERROR:
        text = body.get("message", "")
        if not isinstance(text, str):
            text = repr(text)
        return GetError(_sha(body, "sha256", where), text[:MAX_ERROR_TEXT])
    if kind == RSYNC_SIGNATURE:
        basis = _sha(body, "basis_sha256", where) if body.get("basis_sha256") is not None \
            else None
        return SignatureHeader(_sha(body, "sha256", where), basis)
    return PatchHeader(_sha(body, "sha256", where))


# -- building our messages (wire bytes of the message unit) ----------------------------


def get_presence() -> bytes:
    """``directory.get_presence``."""
    return encode_message({"type": GET_PRESENCE})


def bloom_filter(k_value: int) -> bytes:
    """``directory.bloom_filter`` header (payload chunks follow)."""
    return encode_message({"type": BLOOM_FILTER, "k_value": k_value}, payload=True)


def present(sha256: str) -> bytes:
    """``directory.present``."""
    return encode_message({"type": PRESENT, "sha256": sha256})


def get(sha256: str, range_: tuple[int, int] | None = None) -> bytes:
    """``directory.get`` (with ``range`` when given)."""
    body: dict[str, Any] = {"type": GET, "sha256": sha256}
    if range_ is not None:
        body["range"] = [range_[0], range_[1]]
    return encode_message(body)


def data(sha256: str, range_: tuple[int, int] | None) -> bytes:
    """``directory.data`` header (payload chunks follow)."""
    body: dict[str, Any] = {"type": DATA, "sha256": sha256}
    if range_ is not None:
        body["range"] = [range_[0], range_[1]]
    return encode_message(body, payload=True)


def not_present(sha256: str) -> bytes:
    """``directory.not_present``."""
    return encode_message({"type": NOT_PRESENT, "sha256": sha256})


def get_error(sha256: str, message: str) -> bytes:
    """``directory.get_error``."""
    return encode_message({"type": GET_ERROR, "sha256": sha256,
                           "message": message[:MAX_ERROR_TEXT]})


def rsync_signature(sha256: str, basis_sha256: str | None) -> bytes:
    """``rsync.signature`` header (the signature follows as payload)."""
    body: dict[str, Any] = {"type": RSYNC_SIGNATURE, "sha256": sha256}
    if basis_sha256 is not None:
        body["basis_sha256"] = basis_sha256
    return encode_message(body, payload=True)


def rsync_patch(sha256: str) -> bytes:
    """``rsync.patch`` header (the delta follows as payload)."""
    return encode_message({"type": RSYNC_PATCH, "sha256": sha256}, payload=True)
