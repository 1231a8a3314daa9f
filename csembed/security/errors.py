"""Errors of the security layer (keys, ``clearskies:2`` handshake, records).

Everything the layer raises derives from :class:`SecurityError`. Failures a
peer causes are also :class:`csembed.errors.ProtocolError`, so code that only
cares "the remote side broke the protocol" can catch that one type:

* :class:`HandshakeError` -- the peer sent a malformed handshake (bad magic,
  bad identity string, an invalid curve point) or took too long.
* :class:`AuthenticationFailed` -- key confirmation failed. The message is the
  same whatever the cause (unknown ID, wrong password, expired or spent code,
  tampering), because the protocol must not tell them apart.
* :class:`RecordError` -- a record after the handshake could not be opened:
  tampered, replayed, reordered, dropped, oversized or truncated.

Local misuse (sending before the handshake completed, after a close) raises
:class:`SessionStateError`; malformed key material raises :class:`KeyFormatError`.
"""

from __future__ import annotations

from csembed.errors import CsembedError, ProtocolError


class SecurityError(CsembedError):
    """Base of the security layer's errors."""


class HandshakeError(SecurityError, ProtocolError):
    """The peer's handshake bytes are malformed, or the handshake timed out."""


class AuthenticationFailed(HandshakeError):
    """Key confirmation failed; deliberately says nothing about why."""

    MESSAGE = (
        "authentication failed: the peer does not hold the same access code or key "
        "(or the code is unknown, expired or already used, or the handshake was altered)"
    )

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.MESSAGE)


class RecordError(SecurityError, ProtocolError):
    """A record could not be authenticated, or the stream ended without a close record."""


class SessionStateError(SecurityError):
    """The local caller used a session in a state that does not allow it."""


class KeyFormatError(SecurityError):
    """Key material or a key record is malformed (wrong length, bad hex, missing field)."""
