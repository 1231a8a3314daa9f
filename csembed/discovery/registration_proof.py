"""Proofs that a tracker registrant knows more than a club's public ID (sans-I/O).

Club IDs are public (trackers relay them, LAN announcements carry them), and
the draft lets anyone register any ID with a tracker, which lets an attacker
list made-up peers -- addresses of its choosing -- for a real club. A csembed
tracker therefore registers an ID only with a *proof*: bytes whose SHA-256 is
the ID, which only members can know (``protocol/discovery.md`` has the rules):

* for an **access ID** -- already SHA-256 of the access code's first 8 bytes
  in the draft -- those 8 bytes, known to whoever issued or holds the code;
* for a **key ID** -- derived from the level key by csembed:
  ``SHA-256(BLAKE2b-256("clearskies:2 key id preimage", key=level key))`` --
  the BLAKE2b value, known to whoever holds the key.

The proof reveals nothing of the code's secret half or of the key. It is a
static value, so whoever watches a (plaintext) tracker connection learns it
and could register that ID too; the dialling limits of the connection
manager bound what a forged listing can cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from csembed import digests
from csembed.hex_ids import is_lower_hex

__all__ = ["MAX_PROOF_BYTES", "proof_hex", "proves", "proven_ids"]

MAX_PROOF_BYTES: Final = 64


def proof_hex(preimage: bytes) -> str:
    """A preimage as it travels in ``tracker.register``'s ``proofs``."""
    if not 1 <= len(preimage) <= MAX_PROOF_BYTES:
        raise ValueError(f"a registration proof is 1 to {MAX_PROOF_BYTES} bytes")
    return preimage.hex()


def proves(club_id: str, proof: object) -> bool:
    """Whether ``proof`` (lowercase hex) is a preimage of ``club_id`` under SHA-256."""
    if (not isinstance(proof, str) or len(proof) % 2 or not 2 <= len(proof) <= 2 * MAX_PROOF_BYTES
            or not is_lower_hex(proof, len(proof))):
        return False
    return digests.sha256(bytes.fromhex(proof)).hexdigest() == club_id


def proven_ids(ids: Mapping[str, str], proofs: Mapping[str, str]) -> dict[str, str]:
    """The entries of ``ids`` (club ID -> peer ID) whose club ID ``proofs`` proves."""
    return {club: peer for club, peer in ids.items() if proves(club, proofs.get(club))}
