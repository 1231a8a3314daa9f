"""The libsodium functions csembed uses, called through PyNaCl's cffi module.

Theory of operation
-------------------
PyNaCl is two things: a compiled cffi module, ``nacl._sodium`` (``ffi`` and
``lib``, libsodium itself), and pure-Python wrappers around it. Importing the
wrappers' ``nacl.bindings`` (which ``nacl.signing`` and ``nacl.utils`` do)
imports every one of its sixteen modules -- password hashing, boxes, AEADs,
scrypt parameter pickers -- about 0.9 MB of a small board's resident memory
for the dozen functions csembed calls. This module calls those functions on
``lib`` directly, with the same argument checks the wrappers make, and
initialises libsodium itself (``sodium_init``, which the wrappers' package
would have run on import).

Failures are this module's :class:`SodiumError` family: a bad length is a
:class:`ValueError` subclass (a caller's mistake), a signature that does not
verify is :class:`BadSignature`, a curve operation with no valid result is
:class:`InvalidPoint`. libsodium is the same library with either
``CSEMBED_BACKEND``; only our own delta code has a pure-Python twin.

Where PyNaCl predates a function (``crypto_core_ed25519_from_uniform`` came
with 1.6), ``lib`` lacks the attribute; :func:`has` answers without raising so
that :mod:`csembed.security.sodium_version` can name the fix.
"""

from __future__ import annotations

from typing import Any, Final

from nacl._sodium import ffi, lib

from csembed.security.errors import SecurityError

__all__ = [
    "BadSignature", "InvalidPoint", "SecretStreamState", "SodiumError", "ed25519_from_uniform",
    "ed25519_is_valid_point", "ed25519_point_add", "ed25519_point_sub",
    "ed25519_scalar_reduce", "ed25519_scalarmult_base_noclamp", "ed25519_scalarmult_noclamp",
    "generichash", "has", "memory_equal", "random_bytes", "sign_detached", "sign_keypair",
    "verify_detached",
]


class SodiumError(SecurityError):
    """A libsodium call failed."""


class BadLength(SodiumError, ValueError):
    """An argument has a length the primitive does not accept."""


class BadSignature(SodiumError):
    """An Ed25519 signature does not verify."""


class InvalidPoint(SodiumError):
    """A curve operation has no valid result (not a point, identity, small order)."""


if lib.sodium_init() < 0:  # pragma: no cover - only when the OS has no entropy source
    raise SodiumError("libsodium could not initialise (sodium_init failed)")

SIGN_SEED_BYTES: Final = 32
SIGN_PUBLIC_BYTES: Final = int(lib.crypto_sign_publickeybytes())
SIGN_SECRET_BYTES: Final = int(lib.crypto_sign_secretkeybytes())
SIGNATURE_BYTES: Final = int(lib.crypto_sign_bytes())
POINT_BYTES: Final = 32
SCALAR_BYTES: Final = 32
NONREDUCED_SCALAR_BYTES: Final = 64
HASH_BYTES_MIN: Final = int(lib.crypto_generichash_blake2b_bytes_min())
HASH_BYTES_MAX: Final = int(lib.crypto_generichash_blake2b_bytes_max())
HASH_KEY_BYTES_MAX: Final = int(lib.crypto_generichash_blake2b_keybytes_max())

STREAM_HEADER_BYTES: Final = int(lib.crypto_secretstream_xchacha20poly1305_headerbytes())
STREAM_KEY_BYTES: Final = int(lib.crypto_secretstream_xchacha20poly1305_keybytes())
STREAM_ABYTES: Final = int(lib.crypto_secretstream_xchacha20poly1305_abytes())
STREAM_TAG_MESSAGE: Final = int(lib.crypto_secretstream_xchacha20poly1305_tag_message())
STREAM_TAG_FINAL: Final = int(lib.crypto_secretstream_xchacha20poly1305_tag_final())
_STREAM_STATE_BYTES: Final = int(lib.crypto_secretstream_xchacha20poly1305_statebytes())


def has(name: str) -> bool:
    """True when the installed PyNaCl binds libsodium's function ``name``."""
    return hasattr(lib, name)


def _check(value: bytes | bytearray | memoryview, size: int, what: str) -> None:
    if len(value) != size:
        raise BadLength(f"{what} must be {size} bytes, got {len(value)}")


def _out(size: int) -> Any:
    return ffi.new("unsigned char[]", size)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from libsodium's CSPRNG (the operating system's)."""
    buf = _out(n)
    lib.randombytes(buf, n)
    return bytes(ffi.buffer(buf, n))


def memory_equal(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> bool:
    """Constant-time comparison of two byte strings of the same length."""
    if len(a) != len(b):
        return False
    return bool(lib.sodium_memcmp(bytes(a), bytes(b), len(a)) == 0)


# -- Ed25519 signatures ---------------------------------------------------------------------

def sign_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """``(public key, 64-byte secret key)`` of the Ed25519 key pair from a 32-byte seed."""
    _check(seed, SIGN_SEED_BYTES, "an Ed25519 seed")
    public, secret = _out(SIGN_PUBLIC_BYTES), _out(SIGN_SECRET_BYTES)
    if lib.crypto_sign_seed_keypair(public, secret, bytes(seed)) != 0:  # pragma: no cover
        raise SodiumError("crypto_sign_seed_keypair failed")
    return bytes(ffi.buffer(public, SIGN_PUBLIC_BYTES)), bytes(ffi.buffer(secret,
                                                                         SIGN_SECRET_BYTES))


def sign_detached(secret_key: bytes, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message`` (``secret_key``: seed or 64-byte key)."""
    if len(secret_key) == SIGN_SEED_BYTES:
        secret_key = sign_keypair(secret_key)[1]
    _check(secret_key, SIGN_SECRET_BYTES, "an Ed25519 secret key")
    # PyNaCl binds only the combined form (signature || message); keep its first 64 bytes.
    signed = _out(len(message) + SIGNATURE_BYTES)
    if lib.crypto_sign(signed, ffi.NULL, message, len(message), secret_key) != 0:
        raise SodiumError("crypto_sign failed")  # pragma: no cover
    return bytes(ffi.buffer(signed, SIGNATURE_BYTES))


def verify_detached(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is ``public_key``'s over ``message``."""
    _check(public_key, SIGN_PUBLIC_BYTES, "an Ed25519 public key")
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignature(f"an Ed25519 signature is {SIGNATURE_BYTES} bytes, "
                           f"got {len(signature)}")
    signed = bytes(signature) + bytes(message)
    opened = _out(len(signed))
    if lib.crypto_sign_open(opened, ffi.NULL, signed, len(signed), bytes(public_key)) != 0:
        raise BadSignature("signature does not verify")


# -- BLAKE2b ------------------------------------------------------------------------------

def generichash(data: bytes, size: int = 32, key: bytes = b"") -> bytes:
    """BLAKE2b (``crypto_generichash``) of ``data``: ``size`` bytes, optionally keyed."""
    if not HASH_BYTES_MIN <= size <= HASH_BYTES_MAX:
        raise BadLength(f"a BLAKE2b digest is {HASH_BYTES_MIN}..{HASH_BYTES_MAX} bytes, "
                        f"not {size}")
    if len(key) > HASH_KEY_BYTES_MAX:
        raise BadLength(f"a BLAKE2b key is at most {HASH_KEY_BYTES_MAX} bytes, got {len(key)}")
    digest = _out(size)
    rc = lib.crypto_generichash_blake2b_salt_personal(
        digest, size, data, len(data), key if key else ffi.NULL, len(key), ffi.NULL, ffi.NULL)
    if rc != 0:  # pragma: no cover - lengths are checked above
        raise SodiumError("crypto_generichash failed")
    return bytes(ffi.buffer(digest, size))


# -- edwards25519 group operations (SPAKE2) -----------------------------------------------

def ed25519_from_uniform(data: bytes) -> bytes:
    """The point libsodium maps 32 uniform bytes to (Elligator 2, cofactor cleared)."""
    _check(data, POINT_BYTES, "the input of from_uniform")
    point = _out(POINT_BYTES)
    if lib.crypto_core_ed25519_from_uniform(point, data) != 0:  # pragma: no cover
        raise InvalidPoint("crypto_core_ed25519_from_uniform failed")
    return bytes(ffi.buffer(point, POINT_BYTES))


def ed25519_scalar_reduce(wide: bytes) -> bytes:
    """A 64-byte little-endian number reduced modulo the group order ``L``."""
    _check(wide, NONREDUCED_SCALAR_BYTES, "a scalar to reduce")
    scalar = _out(SCALAR_BYTES)
    lib.crypto_core_ed25519_scalar_reduce(scalar, wide)
    return bytes(ffi.buffer(scalar, SCALAR_BYTES))


def ed25519_is_valid_point(point: bytes) -> bool:
    """True for a canonical point of the prime-order subgroup that is not of small order."""
    return len(point) == POINT_BYTES and lib.crypto_core_ed25519_is_valid_point(point) == 1


def _point_op(function: Any, a: bytes, b: bytes, what: str) -> bytes:
    _check(a, POINT_BYTES, f"the first operand of {what}")
    _check(b, POINT_BYTES, f"the second operand of {what}")
    result = _out(POINT_BYTES)
    if function(result, a, b) != 0:
        raise InvalidPoint(f"{what}: an operand is not a valid point")
    return bytes(ffi.buffer(result, POINT_BYTES))


def ed25519_point_add(p: bytes, q: bytes) -> bytes:
    """``p + q``."""
    return _point_op(lib.crypto_core_ed25519_add, p, q, "point addition")


def ed25519_point_sub(p: bytes, q: bytes) -> bytes:
    """``p - q``."""
    return _point_op(lib.crypto_core_ed25519_sub, p, q, "point subtraction")


def ed25519_scalarmult_noclamp(scalar: bytes, point: bytes) -> bytes:
    """``scalar * point``; :class:`InvalidPoint` if the result is the identity or
    ``point`` is not valid."""
    return _point_op(lib.crypto_scalarmult_ed25519_noclamp, scalar, point,
                     "scalar multiplication")


def ed25519_scalarmult_base_noclamp(scalar: bytes) -> bytes:
    """``scalar * G``; :class:`InvalidPoint` for a zero scalar."""
    _check(scalar, SCALAR_BYTES, "a scalar")
    result = _out(POINT_BYTES)
    if lib.crypto_scalarmult_ed25519_base_noclamp(result, scalar) != 0:
        raise InvalidPoint("scalar multiplication of the base point gave the identity")
    return bytes(ffi.buffer(result, POINT_BYTES))


# -- XChaCha20-Poly1305 secretstream ------------------------------------------------------

class SecretStreamState:
    """One direction's ``crypto_secretstream_xchacha20poly1305`` state.

    :attr:`statebuf` is the C buffer :mod:`csembed.security.records` passes
    to ``lib``'s push and pull.
    """

    __slots__ = ("statebuf",)

    def __init__(self) -> None:
        self.statebuf: Any = _out(_STREAM_STATE_BYTES)

    @classmethod
    def push(cls, key: bytes) -> tuple[SecretStreamState, bytes]:
        """A state for sealing under ``key``, and the stream header to send first."""
        _check(key, STREAM_KEY_BYTES, "a secretstream key")
        state, header = cls(), _out(STREAM_HEADER_BYTES)
        if lib.crypto_secretstream_xchacha20poly1305_init_push(
                state.statebuf, header, key) != 0:  # pragma: no cover
            raise SodiumError("secretstream init_push failed")
        return state, bytes(ffi.buffer(header, STREAM_HEADER_BYTES))

    @classmethod
    def pull(cls, key: bytes, header: bytes) -> SecretStreamState:
        """A state for opening the stream that began with ``header``."""
        _check(key, STREAM_KEY_BYTES, "a secretstream key")
        _check(header, STREAM_HEADER_BYTES, "a secretstream header")
        state = cls()
        if lib.crypto_secretstream_xchacha20poly1305_init_pull(
                state.statebuf, header, key) != 0:
            raise SodiumError("secretstream header rejected")
        return state
