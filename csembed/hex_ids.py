"""Hex IDs and digests: the one place that says what a well-formed one is.

The protocol documents state two rules, and each ID kind follows one:

* **written by us, read strictly** -- peer IDs (``database.md``: "32
  lower-case hex digits"), access and key IDs in the handshake identity
  (``handshake.md``: "64 lower-case hex digits"; anything else is
  malformed), the IDs in our own data files. :func:`is_lower_hex` checks them.
* **read in any case, written lower case** -- club and peer IDs on the
  tracker and LAN wire (``discovery.md``: "accepted in upper or lower case and
  always sent in lower case, so one club can never be split in two by
  spelling"), and ``sha256`` values in directory messages (``directory.md``:
  "read in any case, written lower-case"). :func:`lower_hex_of` accepts them
  and returns the lower-case form, or ``None``.

Both refuse anything but a ``str`` of exactly ``digits`` ASCII hex digits.
Callers raise their own layer's error with their own wording.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

__all__ = ["ID_DIGITS", "PEER_ID_DIGITS", "is_lower_hex", "lower_hex_of"]

PEER_ID_DIGITS: Final = 32
"""A peer ID: 128 random bits."""
ID_DIGITS: Final = 64
"""An access ID, key ID or SHA-256 digest: 256 bits."""

_LOWER = re.compile(r"[0-9a-f]*", re.ASCII)
_ANY_CASE = re.compile(r"[0-9a-fA-F]*", re.ASCII)


def is_lower_hex(value: object, digits: int) -> TypeGuard[str]:
    """True for a ``str`` of exactly ``digits`` lower-case hex digits."""
    return (isinstance(value, str) and len(value) == digits
            and _LOWER.fullmatch(value) is not None)


def lower_hex_of(value: object, digits: int) -> str | None:
    """``value`` in lower case if it is exactly ``digits`` hex digits in any case, else ``None``."""
    if isinstance(value, str) and len(value) == digits and _ANY_CASE.fullmatch(value):
        return value.lower()
    return None
