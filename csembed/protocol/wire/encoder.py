"""Encoding messages, payload chunks and the payload end for the wire.

Theory of operation
-------------------
The functions here produce exactly what the
:class:`~csembed.protocol.wire.decoder.Decoder` accepts; raw body bytes
handed in are checked with the decoder's own rules, so we never send what a
peer would refuse. A sender streaming a payload writes
:func:`encode_chunk_header` and the data separately, so large chunks go out
without being joined into a new object.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

from csembed.protocol.jsonvalues import is_strict_int
from csembed.protocol.wire.body_json import encode_body, parse_body
from csembed.protocol.wire.events import MAX_BODY, MAX_CHUNK, MAX_SIGNATURE_TEXT, WireError


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
