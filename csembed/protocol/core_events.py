"""What a :class:`~csembed.protocol.core.PeerConnection` tells its caller, and its errors.

Theory of operation
-------------------
Besides the wire events of application messages and the session's
``SessionClosed``/``SessionFailed``, a connection reports the milestones of
the core protocol: :class:`Ready` (application messages may flow),
:class:`KeysReceived` (store these keys, then acknowledge) and
:class:`KeysAcknowledged` (a code was used). :class:`PeerTimedOut` is the
keep-alive's verdict on a silent peer; :class:`CoreStateError` a local
caller's misuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from csembed.errors import CsembedError
from csembed.protocol.core_access import Grant, IssuedCode
from csembed.protocol.core_messages import CoreError
from csembed.protocol.wire import Message, PayloadChunk, PayloadEnd
from csembed.security.handshake import SessionClosed, SessionFailed
from csembed.security.keys import ShareKeys

__all__ = ["CoreEvent", "CoreStateError", "KeysAcknowledged", "KeysReceived", "PeerTimedOut",
           "Ready"]


class PeerTimedOut(CoreError):
    """Nothing arrived from the peer within the keep-alive timeout."""


class CoreStateError(CsembedError):
    """The local caller used the connection in a phase that does not allow it."""


@dataclass(frozen=True)
class Ready:
    """Negotiation and key exchange are done; application messages may flow.

    ``access_level`` is the level the connection runs at and ``share`` the
    keys this side now holds for it (for a new member: the keys just
    received). ``grant`` is the grant the connection was made under.
    """

    protocol: int
    extensions: tuple[str, ...]
    peer_id: str
    peer_name: str | None
    peer_software: str | None
    access_level: str
    share: ShareKeys = field(repr=False)
    grant: Grant = field(repr=False)


@dataclass(frozen=True)
class KeysReceived:
    """A code's creator sent the share's keys. Store them (mode 0600), then call
    :meth:`PeerConnection.acknowledge_keys`; the creator spends the code on
    the acknowledgment, so do not acknowledge what is not safely stored."""

    access_level: str
    share: ShareKeys = field(repr=False)
    grant: Grant = field(repr=False)


@dataclass(frozen=True)
class KeysAcknowledged:
    """The new member acknowledged our keys; ``code`` is the issued code after
    this use (``code.uses``), already removed from the table if it has no use left."""

    access_id: str
    access_level: str
    code: IssuedCode | None = field(repr=False)


CoreEvent = (Ready | KeysReceived | KeysAcknowledged | Message | PayloadChunk | PayloadEnd
             | SessionClosed | SessionFailed)
