"""Codecs for getting through NATs: STUN (RFC 5389), UPnP IGD, NAT-PMP (sans-I/O)."""
