"""Errors of the discovery layer (tracker protocol, LAN broadcast, addresses).

* :class:`DiscoveryError` -- root of the family.
* :class:`AddressError` -- an ID or a peer address string is malformed; raised
  for values from the user and from peers alike, ``ValueError`` too.
* :class:`TrackerError` -- the other end of a tracker connection broke the
  tracker protocol; the connection is finished after it.
* :class:`BroadcastError` -- a LAN datagram is not a valid announcement; the
  listener drops it (datagrams come from anybody on the LAN).
"""

from __future__ import annotations

from csembed.errors import CsembedError, ProtocolError


class DiscoveryError(CsembedError):
    """Root of the discovery layer's errors."""


class AddressError(DiscoveryError, ValueError):
    """An access/key ID, a peer ID or a peer address is malformed."""


class TrackerError(DiscoveryError, ProtocolError):
    """The other end of a tracker connection broke the tracker protocol."""


class BroadcastError(DiscoveryError, ProtocolError):
    """A LAN datagram is not a valid ClearSkies announcement."""
