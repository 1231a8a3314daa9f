"""Transports other than TCP that carry the secure session (uTP, BEP 29)."""
