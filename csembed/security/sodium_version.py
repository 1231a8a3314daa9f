"""The PyNaCl features csembed needs, checked with a message that names the fix.

csembed's SPAKE2 maps seeds to curve points with libsodium's
``crypto_core_ed25519_from_uniform``, which PyNaCl binds from version 1.6
on (csembed calls PyNaCl's compiled ``nacl._sodium`` directly, see
:mod:`csembed.security.sodium`, so the check asks that module). Debian
bookworm (and Raspberry Pi OS) ship python3-nacl 1.5, so a plain
``AttributeError`` deep in an import would be the first thing such a user sees.
Instead the function is looked up when it is first needed (importing csembed,
and so ``csembed --help``, still works) and its absence is a
:class:`MissingDependency` naming the version to install. The daemon calls
:func:`check_sodium` when it starts, so it refuses to run at once rather than
fail on its first connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import nacl

from csembed.errors import CsembedError
from csembed.security import sodium

PYNACL_MINIMUM: Final = "1.6"
"""First PyNaCl release with ``crypto_core_ed25519_from_uniform``."""
_REQUIRED: Final = ("crypto_core_ed25519_from_uniform",)


class MissingDependency(CsembedError):
    """An installed library is too old for csembed."""


def check_sodium() -> None:
    """Raise :class:`MissingDependency` unless PyNaCl has everything csembed uses."""
    missing = [name for name in _REQUIRED if not sodium.has(name)]
    if missing:
        found = getattr(nacl, "__version__", "unknown")
        raise MissingDependency(
            f"csembed needs PyNaCl >= {PYNACL_MINIMUM} (for {', '.join(missing)}), "
            f"but PyNaCl {found} is installed; upgrade it, e.g. "
            f"pip install 'PyNaCl>={PYNACL_MINIMUM}'")


def require_hash_to_point() -> Callable[[bytes], bytes]:
    """libsodium's ``crypto_core_ed25519_from_uniform``, or :class:`MissingDependency`."""
    check_sodium()
    return sodium.ed25519_from_uniform
