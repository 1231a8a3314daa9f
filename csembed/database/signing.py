"""Ed25519 signer and verifier callables for a replica.

The replica only needs two small functions: ``sign(raw) -> signature`` (held by
read-write peers) and ``verify(raw, signature) -> bool`` (everyone holds the
read-write level's public key). Both cover exactly the JSON body bytes of an
``s``/``$`` message. These helpers build them from raw 32-byte keys with
PyNaCl; the runtime may pass its own callables instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import nacl.exceptions
import nacl.signing

__all__ = ["SIGNATURE_BYTES", "Signer", "Verifier", "ed25519_signer", "ed25519_verifier"]

SIGNATURE_BYTES: Final = 64

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes], bool]


def ed25519_signer(seed: bytes) -> Signer:
    """``sign(raw)`` with the read-write level's 32-byte Ed25519 seed."""
    key = nacl.signing.SigningKey(bytes(seed))

    def sign(raw: bytes) -> bytes:
        return bytes(key.sign(raw).signature)

    return sign


def ed25519_verifier(public_key: bytes) -> Verifier:
    """``verify(raw, signature)`` against the read-write level's public key."""
    key = nacl.signing.VerifyKey(bytes(public_key))

    def verify(raw: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            key.verify(raw, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    return verify
