"""csembed.security.sodium calls libsodium through PyNaCl's compiled module: the
same bytes as PyNaCl's own wrappers, clear errors, and none of the wrappers loaded."""

from __future__ import annotations

import subprocess
import sys

import nacl.bindings as wrappers
import nacl.signing
import pytest

from csembed.security import sodium

SEED = bytes(range(32))


def test_signatures_match_pynacls_and_a_bad_one_is_named() -> None:
    public, secret = sodium.sign_keypair(SEED)
    key = nacl.signing.SigningKey(SEED)
    assert public == bytes(key.verify_key)
    signature = sodium.sign_detached(SEED, b"take1.mid")
    assert signature == sodium.sign_detached(secret, b"take1.mid")
    assert signature == key.sign(b"take1.mid").signature
    sodium.verify_detached(public, b"take1.mid", signature)
    with pytest.raises(sodium.BadSignature):
        sodium.verify_detached(public, b"take2.mid", signature)
    with pytest.raises(sodium.BadSignature, match="64 bytes"):
        sodium.verify_detached(public, b"take1.mid", signature[:63])
    with pytest.raises(ValueError, match="32 bytes"):
        sodium.sign_keypair(SEED[:31])


def test_hashes_and_group_operations_match_pynacls() -> None:
    assert sodium.generichash(b"piano", 64, key=b"k" * 32) == \
        wrappers.crypto_generichash_blake2b_salt_personal(b"piano", digest_size=64, key=b"k" * 32)
    with pytest.raises(ValueError, match="BLAKE2b digest"):
        sodium.generichash(b"piano", 65)
    uniform = sodium.generichash(b"seed", 32)
    point = sodium.ed25519_from_uniform(uniform)
    assert point == wrappers.crypto_core_ed25519_from_uniform(uniform)
    scalar = sodium.ed25519_scalar_reduce(bytes(range(64)))
    assert scalar == wrappers.crypto_core_ed25519_scalar_reduce(bytes(range(64)))
    assert sodium.ed25519_scalarmult_noclamp(scalar, point) == \
        wrappers.crypto_scalarmult_ed25519_noclamp(scalar, point)
    base = sodium.ed25519_scalarmult_base_noclamp(scalar)
    assert base == wrappers.crypto_scalarmult_ed25519_base_noclamp(scalar)
    assert sodium.ed25519_point_add(base, point) == wrappers.crypto_core_ed25519_add(base, point)
    assert sodium.ed25519_point_sub(base, point) == wrappers.crypto_core_ed25519_sub(base, point)
    assert sodium.ed25519_is_valid_point(point) and not sodium.ed25519_is_valid_point(bytes(32))
    identity = sodium.ed25519_from_uniform(bytes(32))  # maps to the neutral element
    with pytest.raises(sodium.InvalidPoint):
        sodium.ed25519_scalarmult_noclamp(scalar, identity)
    assert sodium.memory_equal(b"abc", bytearray(b"abc")) and not sodium.memory_equal(b"a", b"ab")
    assert len(sodium.random_bytes(24)) == 24 and sodium.random_bytes(16) != sodium.random_bytes(16)


def test_the_session_stack_loads_no_pynacl_wrappers() -> None:
    probe = ("import sys, csembed.security.handshake, csembed.protocol.core_signing, "
             "csembed.database.signing, csembed.security.sodium_version as v; v.check_sodium(); "
             "print(sorted(m for m in sys.modules if m.startswith('nacl.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "['nacl._sodium']"
