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

from csembed.security import sodium

__all__ = ["SIGNATURE_BYTES", "Signer", "Verifier", "ed25519_signer", "ed25519_verifier"]

SIGNATURE_BYTES: Final = 64

Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes, bytes], bool]


def ed25519_signer(seed: bytes) -> Signer:
    """``sign(raw)`` with the read-write level's 32-byte Ed25519 seed."""
    secret = sodium.sign_keypair(bytes(seed))[1]

    def sign(raw: bytes) -> bytes:
        return sodium.sign_detached(secret, raw)

    return sign


def ed25519_verifier(public_key: bytes) -> Verifier:
    """``verify(raw, signature)`` against the read-write level's public key."""
    key = bytes(public_key)
    if len(key) != sodium.SIGN_PUBLIC_BYTES:
        raise ValueError(f"an Ed25519 public key is {sodium.SIGN_PUBLIC_BYTES} bytes, "
                         f"got {len(key)}")

    def verify(raw: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            sodium.verify_detached(key, raw, signature)
        except sodium.BadSignature:
            return False
        return True

    return verify
