"""SHA-256 and keyed BLAKE2b, from the implementation the board picks.

Theory of operation
-------------------
:mod:`hashlib` loads OpenSSL's libcrypto the moment it is imported (so do
:mod:`hmac` and :mod:`secrets`, through ``_hashlib``): about 3.5 MB resident
on x86-64, more than a tenth of what the ``wifi-piano`` board allows the
whole daemon. CPython also carries its own SHA-256 (``_sha256``, ``_sha2``
from 3.12) and BLAKE2 (``_blake2``, which is what ``hashlib.blake2b`` is
anyway), each a few kilobytes. They give the same digests; OpenSSL's SHA-256
is faster (several times, with the CPU's SHA instructions), which matters on a
desktop scanning gigabytes and not on a board whose link moves 1 MB/s.

So the daemon's modules hash through :func:`sha256` here, never through
:mod:`hashlib`, and the board's ``cpu.sha256`` (``"openssl"`` or
``"builtin"``) picks the implementation once, at daemon start
(:func:`use_sha256`); hashlib is imported only when ``"openssl"`` is in force
and a digest is first asked for. Until a choice is made, OpenSSL's is used.
The choice is process-wide: it changes speed and memory, never a digest.

For the same reason the daemon's random tokens come from :func:`os.urandom`
directly (which is what :mod:`secrets` wraps).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

__all__ = ["SHA256_IMPLEMENTATIONS", "Hash", "blake2b_256", "sha256", "sha256_in_use",
           "use_sha256"]

SHA256_IMPLEMENTATIONS = ("openssl", "builtin")


class Hash(Protocol):
    """What a running digest offers (hashlib's and the builtin modules' objects alike)."""

    @property
    def name(self) -> str: ...
    @property
    def digest_size(self) -> int: ...
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Hash: ...


_choice = "openssl"
_factory: Callable[..., Hash] | None = None


def _builtin_sha256() -> Callable[..., Hash]:
    for module in ("_sha2", "_sha256"):  # 3.12+, then 3.11
        try:
            return importlib.import_module(module).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    import hashlib  # a Python without the builtin module: OpenSSL's is all there is
    return hashlib.sha256


def _openssl_sha256() -> Callable[..., Hash]:
    import hashlib
    return hashlib.sha256


def use_sha256(implementation: str) -> None:
    """Hash with ``"openssl"`` (hashlib) or ``"builtin"`` (CPython's own) SHA-256 from now on."""
    global _choice, _factory
    if implementation not in SHA256_IMPLEMENTATIONS:
        raise ValueError(f"unknown SHA-256 implementation {implementation!r} "
                         f"(expected {' or '.join(SHA256_IMPLEMENTATIONS)})")
    if implementation != _choice:
        _choice, _factory = implementation, None


def sha256_in_use() -> str:
    """The implementation :func:`sha256` uses: ``"openssl"`` or ``"builtin"``."""
    return _choice


def sha256(data: bytes | bytearray | memoryview = b"") -> Hash:
    """A new SHA-256 digest, fed ``data`` (like :func:`hashlib.sha256`)."""
    global _factory
    if _factory is None:
        _factory = _openssl_sha256() if _choice == "openssl" else _builtin_sha256()
    return _factory(data)


def blake2b_256(data: bytes, key: bytes = b"") -> bytes:
    """BLAKE2b with a 32-byte digest, optionally keyed (``hashlib.blake2b`` is this module)."""
    try:
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - a Python without CPython's _blake2
        from hashlib import blake2b
    return blake2b(data, digest_size=32, key=key).digest()
