"""Share keys and peer IDs: generation, grants, serialisable records.

A share (the draft's "club") has, for every access level, a 256-bit
communication key, a 256-bit key ID naming that key in public (trackers, LAN
broadcast, the ``clearskies:2`` identity string) and an Ed25519 key pair that
signs ``s``/``$`` messages (csembed's replacement for the draft's RSA-2048
keys, see DESIGN.md section 2). Every peer has a 128-bit peer ID per share.

All randomness comes from an injected ``rng(n) -> bytes``; the default is
libsodium's ``randombytes`` (the OS CSPRNG), never a seeded PRNG, so keys meet
the draft's "must not come from a PRNG" rule while tests stay deterministic.

What a new member receives depends on the access level its code grants
(:meth:`ShareKeys.grant`): a read-write member gets every level in full; a
read-only member gets the read-only level in full and only the *public*
signing key of the read-write level, so it can check read-write signatures
but never forge them.

Keys travel and rest as JSON objects with hex fields (:meth:`LevelKeys.to_entry`,
the same shape as one element of ``core.keys``' ``keys`` array) and whole
shares as :meth:`ShareKeys.to_record`. Storing them with mode 0600 is the
caller's job; :mod:`csembed.security.key_file` does it atomically.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from csembed import digests
from csembed.hex_ids import is_lower_hex
from csembed.security import sodium
from csembed.security.errors import KeyFormatError

Rng = Callable[[int], bytes]
"""``rng(n)`` returns ``n`` bytes from a cryptographically secure source."""

READ_WRITE: Final = "read_write"
READ_ONLY: Final = "read_only"
ACCESS_LEVELS: Final = (READ_WRITE, READ_ONLY)

# Which levels a member admitted at a level receives in full; every other level
# of the share is sent with its public signing key only.
GRANTS: Final[Mapping[str, tuple[str, ...]]] = {
    READ_WRITE: (READ_WRITE, READ_ONLY),
    READ_ONLY: (READ_ONLY,),
}

KEY_BYTES: Final = 32
KEY_ID_BYTES: Final = 32
PEER_ID_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64
RECORD_FORMAT: Final = "csembed-share-keys"
RECORD_VERSION: Final = 1

_LEVEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def default_rng(n: int) -> bytes:
    """``n`` bytes from libsodium's CSPRNG (the operating system's)."""
    return sodium.random_bytes(n)


def _draw(rng: Rng, n: int, what: str) -> bytes:
    data = rng(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise KeyFormatError(f"rng returned {len(data)} bytes for {what}, expected {n}")
    return data


KEY_ID_PURPOSE: Final = b"clearskies:2 key id preimage"


def key_id_preimage(key: bytes) -> bytes:
    """``BLAKE2b-256(KEY_ID_PURPOSE, key=key)``; the key ID is its SHA-256
    (``protocol/discovery.md``, registration proofs)."""
    return digests.blake2b_256(KEY_ID_PURPOSE, key=key)


def new_peer_id(rng: Rng = default_rng) -> str:
    """A fresh 128-bit peer ID as 32 lowercase hex digits (use one per share)."""
    return _draw(rng, PEER_ID_BYTES, "peer ID").hex()


def check_peer_id(value: object, where: str = "peer ID") -> str:
    """Return ``value`` if it is 32 lowercase hex digits, else raise :class:`KeyFormatError`.

    The one peer-ID check (``database.md``: "32 lower-case hex digits"); the
    tracker and LAN codecs read IDs in any case with
    :func:`csembed.discovery.addresses.read_peer_id` instead, as ``discovery.md`` says.
    """
    return _hex_field(value, PEER_ID_BYTES, where).hex()


def _hex_field(value: object, nbytes: int, where: str) -> bytes:
    if not is_lower_hex(value, 2 * nbytes):
        raise KeyFormatError(
            f"{where}: expected {2 * nbytes} lowercase hex digits, got {value!r:.80}")
    return bytes.fromhex(value)


def _check_len(value: bytes | None, n: int, where: str) -> None:
    if value is not None and (not isinstance(value, bytes) or len(value) != n):
        raise KeyFormatError(f"{where}: expected {n} bytes")


@dataclass(frozen=True, repr=False)
class LevelKeys:
    """The keys of one access level, as far as this peer holds them.

    ``verify_key`` (Ed25519 public key) is always present. ``key`` and
    ``key_id`` (both 32 bytes, always together) and ``signing_key`` (the
    32-byte Ed25519 seed) are absent when the level was granted public-only.
    """

    access_level: str
    verify_key: bytes
    key: bytes | None = None
    key_id: bytes | None = None
    signing_key: bytes | None = None

    def __post_init__(self) -> None:
        where = f"keys of access level {self.access_level!r}"
        if not isinstance(self.access_level, str) or not _LEVEL_NAME.fullmatch(self.access_level):
            raise KeyFormatError(f"bad access level name {self.access_level!r:.80}")
        _check_len(self.verify_key, KEY_BYTES, f"{where}: verify_key")
        _check_len(self.key, KEY_BYTES, f"{where}: key")
        _check_len(self.key_id, KEY_ID_BYTES, f"{where}: key id")
        _check_len(self.signing_key, KEY_BYTES, f"{where}: signing_key")
        if (self.key is None) != (self.key_id is None):
            raise KeyFormatError(f"{where}: key and key id must be given together")
        if self.signing_key is not None:
            derived = sodium.sign_keypair(self.signing_key)[0]
            if derived != self.verify_key:
                raise KeyFormatError(f"{where}: verify_key does not match signing_key")

    def __repr__(self) -> str:  # never print secrets
        held = [n for n in ("key", "signing_key") if getattr(self, n) is not None]
        return (f"LevelKeys({self.access_level!r}, key_id={self.key_id_hex}, "
                f"verify_key={self.verify_key.hex()[:16]}…, holds={held})")

    @classmethod
    def generate(cls, access_level: str, rng: Rng = default_rng) -> LevelKeys:
        """Fresh key, key ID and signing key pair for ``access_level``. The key ID
        is derived from the key (:func:`key_id_preimage`), so a member can prove
        to a tracker that it holds the key's preimage without revealing the key."""
        seed = _draw(rng, KEY_BYTES, "signing key")
        key = _draw(rng, KEY_BYTES, "key")
        return cls(
            access_level=access_level,
            verify_key=sodium.sign_keypair(seed)[0],
            key=key,
            key_id=digests.sha256(key_id_preimage(key)).digest(),
            signing_key=seed,
        )

    @property
    def id_preimage(self) -> bytes | None:
        """The bytes whose SHA-256 is the key ID, if the ID was derived from the key
        (shares made before key IDs were derived have random ones: ``None``)."""
        if self.key is None or self.key_id is None:
            return None
        preimage = key_id_preimage(self.key)
        return preimage if digests.sha256(preimage).digest() == self.key_id else None

    @property
    def key_id_hex(self) -> str | None:
        """The key ID as 64 lowercase hex digits (``None`` if public-only)."""
        return None if self.key_id is None else self.key_id.hex()

    @property
    def has_key(self) -> bool:
        """True when the 256-bit communication key is held."""
        return self.key is not None

    def public(self) -> LevelKeys:
        """The same level with only the public signing key."""
        return LevelKeys(self.access_level, self.verify_key)

    def sign(self, data: bytes) -> bytes:
        """Detached Ed25519 signature (64 bytes) of ``data``."""
        if self.signing_key is None:
            raise KeyFormatError(f"no signing key held for access level {self.access_level!r}")
        return sodium.sign_detached(self.signing_key, data)

    def to_entry(self) -> dict[str, str]:
        """This level as a JSON object: ``access_level``, ``verify_key`` and,
        when held, ``id``, ``key``, ``signing_key`` (all hex)."""
        entry = {"access_level": self.access_level, "verify_key": self.verify_key.hex()}
        if self.key is not None and self.key_id is not None:
            entry["id"] = self.key_id.hex()
            entry["key"] = self.key.hex()
        if self.signing_key is not None:
            entry["signing_key"] = self.signing_key.hex()
        return entry

    @classmethod
    def from_entry(cls, entry: object, where: str = "key entry") -> LevelKeys:
        """Parse :meth:`to_entry`'s shape; unknown members are ignored.

        ``verify_key`` may be omitted when ``signing_key`` is present (it is
        derived), mirroring the draft's "public key not required when the
        private key is included".
        """
        if not isinstance(entry, Mapping):
            raise KeyFormatError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        level = entry.get("access_level")
        if not isinstance(level, str):
            raise KeyFormatError(f"{where}: missing string 'access_level'")
        where = f"{where} ({level})"
        seed = None
        if "signing_key" in entry:
            seed = _hex_field(entry["signing_key"], KEY_BYTES, f"{where}.signing_key")
        if "verify_key" in entry:
            verify = _hex_field(entry["verify_key"], KEY_BYTES, f"{where}.verify_key")
        elif seed is not None:
            verify = sodium.sign_keypair(seed)[0]
        else:
            raise KeyFormatError(f"{where}: needs 'verify_key' or 'signing_key'")
        key = key_id = None
        if "key" in entry or "id" in entry:
            key = _hex_field(entry.get("key"), KEY_BYTES, f"{where}.key")
            key_id = _hex_field(entry.get("id"), KEY_ID_BYTES, f"{where}.id")
        return cls(level, verify, key, key_id, seed)


@dataclass(frozen=True)
class ShareKeys:
    """All key material this peer holds for one share, one entry per level."""

    levels: tuple[LevelKeys, ...]

    def __post_init__(self) -> None:
        names = [lv.access_level for lv in self.levels]
        if not names:
            raise KeyFormatError("a share needs at least one access level")
        if len(set(names)) != len(names):
            raise KeyFormatError(f"access level listed twice in {names}")
        ids = [lv.key_id for lv in self.levels if lv.key_id is not None]
        if len(set(ids)) != len(ids):
            raise KeyFormatError("two access levels share one key id")

    @classmethod
    def generate(cls, rng: Rng = default_rng,
                 levels: Iterable[str] = ACCESS_LEVELS) -> ShareKeys:
        """Keys for a brand-new share, one :class:`LevelKeys` per level."""
        return cls(tuple(LevelKeys.generate(name, rng) for name in levels))

    def level(self, access_level: str) -> LevelKeys:
        """The keys of ``access_level``; :class:`KeyFormatError` if the share has no such level."""
        for lv in self.levels:
            if lv.access_level == access_level:
                return lv
        raise KeyFormatError(f"share has no access level {access_level!r}")

    def by_key_id(self, key_id_hex: str) -> LevelKeys | None:
        """The level whose key ID is ``key_id_hex``, if this peer holds it."""
        for lv in self.levels:
            if lv.key_id_hex == key_id_hex:
                return lv
        return None

    def grant(self, access_level: str) -> ShareKeys:
        """What a member admitted at ``access_level`` receives (see module doc).

        Raises :class:`KeyFormatError` if this peer cannot grant the level
        because it does not hold that level's key in full.
        """
        full = GRANTS.get(access_level, (access_level,))
        granted = self.level(access_level)
        if not granted.has_key or granted.signing_key is None:
            raise KeyFormatError(f"cannot grant {access_level!r}: its key is not held in full")
        return ShareKeys(tuple(
            lv if lv.access_level in full and lv.has_key else lv.public() for lv in self.levels
        ))

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable record of every level (store it with mode 0600)."""
        return {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "levels": [lv.to_entry() for lv in self.levels],
        }

    @classmethod
    def from_record(cls, record: object) -> ShareKeys:
        """Inverse of :meth:`to_record`, validating every field."""
        if not isinstance(record, Mapping) or record.get("format") != RECORD_FORMAT:
            raise KeyFormatError(f"not a {RECORD_FORMAT} record")
        if record.get("version") != RECORD_VERSION:
            raise KeyFormatError(f"unsupported key record version {record.get('version')!r}")
        return cls.from_entries(record.get("levels"), "key record")

    @classmethod
    def from_entries(cls, entries: object, where: str) -> ShareKeys:
        """Parse a JSON array of :meth:`LevelKeys.to_entry` objects."""
        if not isinstance(entries, list) or not entries:
            raise KeyFormatError(f"{where}: expected a non-empty array of key entries")
        if len(entries) > 64:
            raise KeyFormatError(f"{where}: {len(entries)} key entries is too many")
        return cls(tuple(LevelKeys.from_entry(e, f"{where}[{i}]") for i, e in enumerate(entries)))
