"""Root of csembed's error families.

Every exception csembed raises on purpose derives from :class:`CsembedError`,
so a front end can catch one type. Each layer owns one family below it:

* :class:`ProtocolError` -- something a peer sent breaks the protocol (bad
  framing, bad JSON shape, bad handshake). Layer-specific subclasses such as
  :class:`csembed.protocol.wire.WireError` narrow it down.
* :class:`csembed.access_code.AccessCodeError` -- a user-supplied access code
  or credential is malformed.
"""

from __future__ import annotations


class CsembedError(Exception):
    """Base class of every error csembed raises deliberately."""


class ProtocolError(CsembedError):
    """A peer sent something that breaks the protocol."""
