"""ClearSkies access codes and the username/password alternative.

Theory of operation
-------------------
An access code is 16 random bytes (core.md): the first 8 locate peers, the
last 8 are the secret that authenticates the connection. For people it is
written as 33 characters::

    base32(96 1A 2F F3 || 16 random bytes)   32 characters, RFC 4648 alphabet
    + 1 Luhn mod 32 check character           over those 32 characters

The 4 prefix bytes make the 20 bytes a whole number of base32 groups and make
every code start ``SYNC``. The check character catches every single mistyped
character and every swap of two neighbouring characters except ``A7``<->``7A``
(``protocol/access_codes.md`` has the proof and the exact algorithm).

* access ID = SHA-256 of the first 8 random bytes, lower-case hex; public.
* secret = the last 8 random bytes; never leaves the device except as the
  PAKE password.

Parsing is forgiving of what people do when copying a code: a
``clearskies://directory/`` prefix, any case, spaces and dashes, and ``0``/``1``
typed for ``O``/``L``. Everything else -- wrong length, wrong prefix, a
character outside the alphabet, a failed check -- is an :class:`AccessCodeError`
naming which.

Instead of a code, a user may pick a username and password:
:meth:`Credentials.from_username_password` gives the access ID (SHA-256 of the
username) and secret (the password) the same way.
"""

from __future__ import annotations

import base64
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from csembed import digests
from csembed.errors import CsembedError
from csembed.hex_ids import ID_DIGITS, is_lower_hex

__all__ = [
    "ALPHABET",
    "CODE_LENGTH",
    "PREFIX",
    "URL_PREFIX",
    "AccessCode",
    "AccessCodeError",
    "Credentials",
    "luhn32_check_char",
]

ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
"""RFC 4648 base32 alphabet; a character's index is its Luhn code point."""
PREFIX: Final = bytes([0x96, 0x1A, 0x2F, 0xF3])
"""core.md's magic prefix; base32 of it starts ``SYNC``."""
RAW_LENGTH: Final = 16
CODE_LENGTH: Final = 33
URL_PREFIX: Final = "clearskies://directory/"

_VALUE = {char: index for index, char in enumerate(ALPHABET)}
_TYPO_MAP = str.maketrans({"0": "O", "1": "L"})
_IGNORED = re.compile(r"[\s\-]+")
_URL = re.compile(r"\s*clearskies://directory/", re.IGNORECASE)
_PREFIX_TEXT = base64.b32encode(PREFIX + bytes(RAW_LENGTH)).decode()[:6]  # "SYNC74"


class AccessCodeError(CsembedError, ValueError):
    """An access code or credential is malformed; the message says how."""


def luhn32_check_char(text: str) -> str:
    """Luhn mod 32 check character for ``text`` (characters from :data:`ALPHABET`).

    Walking from the rightmost character leftwards, every other character's
    value is doubled starting with the rightmost; a doubled value ``d`` counts
    as ``d // 32 + d % 32``. The check character brings the sum to 0 mod 32.
    """
    total = 0
    double = True
    for char in reversed(text):
        value = _VALUE[char]
        if double:
            value *= 2
            value = value // 32 + value % 32
        total += value
        double = not double
    return ALPHABET[-total % 32]


@dataclass(frozen=True)
class Credentials:
    """What a connection needs: the public ``access_id`` and the ``secret``."""

    access_id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not is_lower_hex(self.access_id, ID_DIGITS):
            raise AccessCodeError("access_id must be 64 lower-case hex digits")
        if not isinstance(self.secret, bytes) or not self.secret:
            raise AccessCodeError("secret must be non-empty bytes")

    @classmethod
    def from_username_password(cls, username: str, password: str) -> Credentials:
        """Credentials for a user-chosen username and password (core.md).

        access ID = SHA-256 of the username, secret = the password, both as
        UTF-8 after Unicode NFC normalisation, so the same text typed on
        systems that compose accents differently gives the same bytes.
        """
        if not isinstance(username, str) or not isinstance(password, str):
            raise AccessCodeError("username and password must be strings")
        if not username:
            raise AccessCodeError("username is empty")
        if not password:
            raise AccessCodeError("password is empty")
        try:
            user = unicodedata.normalize("NFC", username).encode("utf-8")
            secret = unicodedata.normalize("NFC", password).encode("utf-8")
        except UnicodeEncodeError:
            raise AccessCodeError("username or password is not valid Unicode text") from None
        return cls(digests.sha256(user).hexdigest(), secret)


@dataclass(frozen=True)
class AccessCode:
    """A 16-byte access code; build with :meth:`generate`, :meth:`parse` or :meth:`from_bytes`."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes):
            raise TypeError("AccessCode.raw must be bytes")
        if len(self.raw) != RAW_LENGTH:
            raise AccessCodeError(f"an access code holds {RAW_LENGTH} bytes, not {len(self.raw)}")

    @classmethod
    def generate(cls, rng: Callable[[int], bytes] | None = None) -> AccessCode:
        """A fresh code from ``rng(16)``; default: the OS CSPRNG (:func:`os.urandom`)."""
        raw = (rng or os.urandom)(RAW_LENGTH)
        if not isinstance(raw, bytes) or len(raw) != RAW_LENGTH:
            raise ValueError(f"rng must return {RAW_LENGTH} bytes")
        return cls(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> AccessCode:
        """The code holding these 16 bytes."""
        return cls(bytes(raw))

    @classmethod
    def parse(cls, text: str) -> AccessCode:
        """Parse a code typed or pasted by a person.

        Accepts the bare code or ``clearskies://directory/<code>``, in any case,
        with spaces and dashes anywhere, and ``0``/``1`` for ``O``/``L``.
        Raises :class:`AccessCodeError` saying whether the length, a character,
        the ``SYNC`` prefix or the check character is wrong.
        """
        if not isinstance(text, str):
            raise AccessCodeError("an access code must be given as text")
        url = _URL.match(text)
        if url is not None:
            text = text[url.end() :]
        elif "://" in text:
            scheme = text.split("://", 1)[0].strip()[:40]
            raise AccessCodeError(
                f"unsupported URL {scheme!r}://...; expected {URL_PREFIX}<code> or a bare code"
            )
        code = _IGNORED.sub("", text).upper().translate(_TYPO_MAP).rstrip("/")
        for position, char in enumerate(code, 1):
            if char not in _VALUE:
                raise AccessCodeError(
                    f"character {position} of the code (not counting spaces and dashes), "
                    f"{char!r}, is not a letter or a digit 2-7"
                )
        if len(code) != CODE_LENGTH:
            raise AccessCodeError(
                f"an access code has {CODE_LENGTH} characters, this one has {len(code)}"
            )
        body, check = code[:-1], code[-1]
        decoded = base64.b32decode(body)
        if decoded[: len(PREFIX)] != PREFIX:
            raise AccessCodeError(
                f"not an access code: it must start with {_PREFIX_TEXT} "
                f"(and then Y, Z or 2-7), this one starts with {body[:7]}"
            )
        if luhn32_check_char(body) != check:
            raise AccessCodeError(
                "check character does not match: the code has a typo "
                "(a wrong, missing or swapped character)"
            )
        return cls(decoded[len(PREFIX) :])

    @property
    def text(self) -> str:
        """The 33-character form, ``SYNC...``."""
        body = base64.b32encode(PREFIX + self.raw).decode("ascii")
        return body + luhn32_check_char(body)

    @property
    def url(self) -> str:
        """The code as a ``clearskies://directory/`` URL."""
        return URL_PREFIX + self.text

    @property
    def access_id(self) -> str:
        """SHA-256 of the first 8 bytes, lower-case hex: public, used to find peers."""
        return digests.sha256(self.raw[:8]).hexdigest()

    @property
    def secret(self) -> bytes:
        """The last 8 bytes: the password for connection authentication."""
        return self.raw[8:]

    @property
    def credentials(self) -> Credentials:
        """``access_id`` and ``secret`` as :class:`Credentials`."""
        return Credentials(self.access_id, self.secret)

    def __repr__(self) -> str:
        # Keep the secret half out of logs and tracebacks.
        return f"AccessCode(access_id={self.access_id[:16]}...)"

    def __str__(self) -> str:
        return self.text
