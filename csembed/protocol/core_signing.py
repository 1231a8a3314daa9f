"""Signed messages (``s`` and ``$``): Ed25519 over the exact JSON body bytes.

core.md signs a message's body (never its payload) with the access level's
key; csembed uses Ed25519 instead of RSA (DESIGN.md section 2). The signature
covers exactly :attr:`Message.raw` -- the body bytes as they travel, including
the trailing LF the wire format counts -- so a receiver verifies what it got
without re-encoding JSON. The signature is 64 bytes, base64 on the wire.

A receiver must check against the public key of the level the message
claims to come from (e.g. database records written by read-write peers
against the read-write ``verify_key``); a read-only member holds that
public key but not the signing key, so it can check but never forge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from csembed.errors import ProtocolError
from csembed.protocol.wire import Message, encode_body, encode_message
from csembed.security import sodium
from csembed.security.keys import KEY_BYTES, SIGNATURE_BYTES, LevelKeys


class SignatureError(ProtocolError):
    """A message that must be signed is unsigned, or its signature does not verify."""


def sign_message(body_or_raw: Mapping[str, Any] | bytes, signing_key: LevelKeys | bytes,
                 *, payload: bool = False) -> bytes:
    """The wire bytes of a signed message (``s``, or ``$`` with ``payload``).

    ``signing_key`` is a level's keys (which must hold the signing key) or a
    32-byte Ed25519 seed. With ``payload`` the caller sends the chunks next.
    """
    raw = bytes(body_or_raw) if isinstance(body_or_raw, bytes | bytearray) \
        else encode_body(body_or_raw)
    if isinstance(signing_key, LevelKeys):
        signature = signing_key.sign(raw)
    else:
        if len(signing_key) != KEY_BYTES:
            raise ValueError(f"an Ed25519 signing seed is {KEY_BYTES} bytes")
        signature = sodium.sign_detached(bytes(signing_key), raw)
    return encode_message(raw, signature=signature, payload=payload)


def verify_message(message: Message, verify_key: LevelKeys | bytes) -> None:
    """Raise :class:`SignatureError` unless ``message`` carries a valid signature
    by ``verify_key`` (a level's keys or a 32-byte Ed25519 public key)."""
    where = f"{message.type!r} message"
    if message.signature is None:
        raise SignatureError(f"{where} is not signed but must be")
    if len(message.signature) != SIGNATURE_BYTES:
        raise SignatureError(f"{where}: signature is {len(message.signature)} bytes, "
                             f"an Ed25519 signature is {SIGNATURE_BYTES}")
    public = verify_key.verify_key if isinstance(verify_key, LevelKeys) else verify_key
    if len(public) != KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {KEY_BYTES} bytes")
    try:
        sodium.verify_detached(public, message.raw, message.signature)
    except sodium.BadSignature:
        level = f" of {verify_key.access_level!r}" if isinstance(verify_key, LevelKeys) else ""
        raise SignatureError(f"{where}: signature does not verify against the "
                             f"public key{level}") from None
