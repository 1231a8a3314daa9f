"""SPAKE2 over edwards25519 and the ``clearskies:2`` key schedule.

Theory of operation (RFC 9382's SPAKE2, with libsodium's primitives via PyNaCl):

* ``G`` is the Ed25519 base point; the group is the prime-order subgroup of
  order ``L``. ``M`` and ``N`` are points nobody knows a discrete log of: each
  is ``crypto_core_ed25519_from_uniform(BLAKE2b-256(seed))`` for a published
  seed string (:data:`M_SEED`, :data:`N_SEED`) -- hash-to-curve of a
  nothing-up-my-sleeve string; libsodium clears the cofactor, so both lie in
  the prime-order subgroup.
* The password becomes a scalar ``w = reduce(BLAKE2b-512(LP(purpose) ||
  LP(identity) || LP(password)))``; binding the identity string means one
  password gives unrelated scalars for different IDs.
* The client picks a fresh scalar ``x`` and sends ``T = x*G + w*M``; the
  server picks ``y`` and sends ``S = y*G + w*N``. Both get
  ``K = x*(S - w*N) = y*(T - w*M) = x*y*G``. Every received point must pass
  ``crypto_core_ed25519_is_valid_point`` (canonical, on the curve, in the
  prime-order subgroup, not of small order), which stands in for RFC 9382's
  cofactor multiplication; an identity result is rejected too.
* Nothing is derived from the password alone: a transcript hash ``TH`` over
  the identity, both roles and both points, and then a 64-byte master secret
  keyed by ``K`` over ``TH`` and ``w``; every further key is BLAKE2b keyed by
  the master secret with a named purpose (:data:`PURPOSES`). The two key
  confirmation MACs are keyed BLAKE2b of ``TH`` under role-specific keys.

``LP(x)`` is ``x``'s length as 8 little-endian bytes followed by ``x`` (as in
RFC 9382), so no two different field lists encode to the same bytes.

An eavesdropper sees ``T`` and ``S`` only; testing a password guess needs
``K``, which needs ``x`` or ``y`` (the Diffie-Hellman problem), so a recorded
handshake allows no offline guessing. An active attacker gets one guess per
connection. ``x`` and ``y`` are drawn fresh per connection and forgotten, so a
later leak of the password or share keys does not open recorded sessions.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from typing import Final

from csembed.security import sodium
from csembed.security.errors import AuthenticationFailed, HandshakeError, KeyFormatError
from csembed.security.keys import Rng
from csembed.security.sodium_version import require_hash_to_point

POINT_BYTES: Final = 32
SCALAR_BYTES: Final = 32
MAC_BYTES: Final = 32
KEY_BYTES: Final = 32

M_SEED: Final = b"clearskies:2 SPAKE2 point M (client)"
N_SEED: Final = b"clearskies:2 SPAKE2 point N (server)"

PURPOSE_PASSWORD: Final = b"clearskies:2 password scalar"
PURPOSE_TRANSCRIPT: Final = b"clearskies:2 transcript"
PURPOSE_MASTER: Final = b"clearskies:2 master secret"
ROLE_CLIENT: Final = b"client"
ROLE_SERVER: Final = b"server"

PURPOSES: Final = {
    "client_confirm_key": b"clearskies:2 client confirmation key",
    "server_confirm_key": b"clearskies:2 server confirmation key",
    "client_to_server_key": b"clearskies:2 stream key client to server",
    "server_to_client_key": b"clearskies:2 stream key server to client",
    "channel_binding": b"clearskies:2 channel binding",
}
"""Purpose string of every key derived from the master secret."""


def lp(data: bytes) -> bytes:
    """``data`` prefixed by its length as 8 little-endian bytes."""
    return struct.pack("<Q", len(data)) + data


def blake2b(data: bytes, size: int, key: bytes = b"") -> bytes:
    """libsodium ``crypto_generichash`` (BLAKE2b) of ``data``, optionally keyed."""
    return sodium.generichash(data, size, key)


def hash_to_point(seed: bytes) -> bytes:
    """A prime-order point with unknown discrete log, from a seed string."""
    return require_hash_to_point()(blake2b(seed, 32))


@functools.cache
def blinding_points() -> tuple[bytes, bytes]:
    """``(M, N)``, computed on first use so that importing this module (and so
    ``csembed --help``) works even where PyNaCl is too old to compute them."""
    return hash_to_point(M_SEED), hash_to_point(N_SEED)


def __getattr__(name: str) -> bytes:
    # ``spake2.M`` / ``spake2.N`` as module constants, computed lazily (PEP 562).
    if name == "M":
        return blinding_points()[0]
    if name == "N":
        return blinding_points()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def password_scalar(identity: bytes, password: bytes) -> bytes:
    """SPAKE2's ``w`` for ``password`` under ``identity`` (32-byte reduced scalar)."""
    digest = blake2b(lp(PURPOSE_PASSWORD) + lp(identity) + lp(password), 64)
    return sodium.ed25519_scalar_reduce(digest)


def random_scalar(rng: Rng) -> bytes:
    """A uniform non-zero scalar from 64 bytes of ``rng`` (reduced mod L)."""
    while True:
        wide = rng(64)
        if not isinstance(wide, bytes) or len(wide) != 64:
            raise KeyFormatError("rng must return exactly the number of bytes asked for")
        scalar = sodium.ed25519_scalar_reduce(wide)
        if any(scalar):
            return scalar


def _mul(scalar: bytes, point: bytes) -> bytes:
    try:
        return sodium.ed25519_scalarmult_noclamp(scalar, point)
    except sodium.InvalidPoint as exc:  # identity or small-order result
        raise AuthenticationFailed() from exc


def check_point(point: bytes, what: str) -> None:
    """Raise :class:`HandshakeError` unless ``point`` is a valid prime-order point."""
    if len(point) != POINT_BYTES or not sodium.ed25519_is_valid_point(point):
        raise HandshakeError(f"{what} is not a valid edwards25519 point of prime order")


@dataclass(frozen=True, repr=False)
class SessionKeys:
    """Everything derived from one SPAKE2 run; all of it from ``K`` and the transcript."""

    transcript_hash: bytes
    client_confirm_key: bytes
    server_confirm_key: bytes
    client_to_server_key: bytes
    server_to_client_key: bytes
    channel_binding: bytes
    client_mac: bytes = field(init=False)
    server_mac: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "client_mac",
                           blake2b(self.transcript_hash, MAC_BYTES, self.client_confirm_key))
        object.__setattr__(self, "server_mac",
                           blake2b(self.transcript_hash, MAC_BYTES, self.server_confirm_key))

    def __repr__(self) -> str:
        return f"SessionKeys(transcript_hash={self.transcript_hash.hex()[:16]}…)"


def transcript_hash(identity: bytes, client_point: bytes, server_point: bytes) -> bytes:
    """BLAKE2b-256 over the identity string, the roles and both points."""
    return blake2b(lp(PURPOSE_TRANSCRIPT) + lp(identity) + lp(ROLE_CLIENT) + lp(client_point)
                   + lp(ROLE_SERVER) + lp(server_point), 32)


def derive_keys(shared: bytes, w: bytes, identity: bytes,
                client_point: bytes, server_point: bytes) -> SessionKeys:
    """The key schedule: master secret keyed by ``K``, then one key per purpose."""
    th = transcript_hash(identity, client_point, server_point)
    master = blake2b(lp(PURPOSE_MASTER) + lp(th) + lp(w), 64, key=shared)
    derived = {name: blake2b(lp(purpose), KEY_BYTES, key=master)
               for name, purpose in PURPOSES.items()}
    return SessionKeys(transcript_hash=th, **derived)


class Spake2:
    """One side of one SPAKE2 exchange; use once and drop (the scalar is ephemeral).

    ``Spake2(role, identity, password, rng)``; :attr:`message` is the point to
    send; :meth:`finish` takes the peer's point and returns :class:`SessionKeys`.
    """

    def __init__(self, role: str, identity: bytes, password: bytes, rng: Rng) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        self.role = role
        self.identity = identity
        self._w = password_scalar(identity, password)
        self._secret = random_scalar(rng)
        m, n = blinding_points()
        own_blind, self._peer_blind = (m, n) if role == "client" else (n, m)
        self.message: bytes = sodium.ed25519_point_add(
            sodium.ed25519_scalarmult_base_noclamp(self._secret), _mul(self._w, own_blind))

    def finish(self, peer_message: bytes) -> SessionKeys:
        """Validate the peer's point, compute ``K`` and derive the session keys."""
        check_point(peer_message, f"the {'server' if self.role == 'client' else 'client'} point")
        unblinded = sodium.ed25519_point_sub(peer_message, _mul(self._w, self._peer_blind))
        shared = _mul(self._secret, unblinded)
        self._secret = b""  # never needed again; forward secrecy wants it gone
        if self.role == "client":
            return derive_keys(shared, self._w, self.identity, self.message, peer_message)
        return derive_keys(shared, self._w, self.identity, peer_message, self.message)
