"""Who may connect, and as what: grants, issued access codes, the server's lookup.

Theory of operation. Every ``clearskies:2`` connection is made under one ID
(an access ID or a key ID) and one password; on top of that the core layer
must know what the connection is *for*. A :class:`Grant` holds both and
travels as the context of the session's credential:

* ``SHARE_KEY`` -- connected with an access level's key ID; no key exchange.
* ``CODE_CREATOR`` -- this device issued the access code; after ``core.start``
  it sends ``core.keys`` with what the code's access level grants, and on
  ``core.keys_acknowledgment`` the code is spent.
* ``CODE_HOLDER`` -- this device was given the code (or a username and
  password) and waits for ``core.keys``.

:class:`AccessCodeTable` holds the codes this device issued, sans-I/O (every
call takes ``now``): default one use and 24 hours (core.md), or ``max_uses``
of ``None`` (unlimited) and ``lifetime`` of ``None`` (never expires). While a
connection is sending keys for a code it holds a *claim*, so a one-time code
cannot be used by two connections at once; a spent, expired, cancelled or
fully claimed code is simply not found, which the handshake turns into the
same failure as a wrong code.

:class:`CredentialRegistry` is the server's view: ``lookup(id_hex, now)``
finds a share's key ID, a live issued code, or a code this device holds and
waits for the creator to connect in with.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Final

from csembed.access_code import AccessCode, Credentials
from csembed.errors import CsembedError
from csembed.security.handshake import Credential
from csembed.security.keys import ShareKeys, check_peer_id

DEFAULT_CODE_LIFETIME: Final = 24 * 3600.0
"""core.md: access codes expire after 24 hours by default."""


class AccessError(CsembedError):
    """A grant or access code was asked for something it cannot do."""


class GrantKind(enum.Enum):
    """What a connection authenticated under a grant is for."""

    SHARE_KEY = "share_key"
    CODE_CREATOR = "code_creator"
    CODE_HOLDER = "code_holder"


@dataclass(frozen=True, eq=False)
class Grant:
    """What one side brings to a connection: ID, password, peer ID, keys.

    ``access_level``: the level the connection runs at (for a creator, the
    level its code grants; ``None`` for a holder until keys arrive).
    ``share``: this side's keys (``None`` for a holder). ``code_table``: the
    creator's table, where the code is claimed and spent. ``tag`` is the
    caller's own reference (a share's name or path) and is handed back in
    events.
    """

    kind: GrantKind
    id_hex: str
    password: bytes = field(repr=False)
    peer_id: str
    access_level: str | None = None
    share: ShareKeys | None = field(default=None, repr=False)
    code_table: AccessCodeTable | None = field(default=None, repr=False)
    tag: object = None

    def __post_init__(self) -> None:
        check_peer_id(self.peer_id, "our peer ID")
        if self.kind is GrantKind.CODE_HOLDER:
            if self.access_level is not None or self.share is not None:
                raise AccessError("a code holder has no access level or keys yet")
        elif self.share is None or self.access_level is None:
            raise AccessError(f"a {self.kind.value} grant needs a share and an access level")
        if self.kind is GrantKind.CODE_CREATOR and self.code_table is None:
            raise AccessError("a code creator grant needs the code table to spend the code in")

    @classmethod
    def share_key(cls, share: ShareKeys, access_level: str, peer_id: str,
                  tag: object = None) -> Grant:
        """Connect (or accept) with the key of ``access_level``."""
        level = share.level(access_level)
        if level.key is None or level.key_id_hex is None:
            raise AccessError(f"the key of access level {access_level!r} is not held")
        return cls(GrantKind.SHARE_KEY, level.key_id_hex, level.key, peer_id, access_level,
                   share, None, tag)

    @classmethod
    def code_holder(cls, code: AccessCode | Credentials, peer_id: str,
                    tag: object = None) -> Grant:
        """Join with an access code (or username/password credentials) we were given."""
        creds = code.credentials if isinstance(code, AccessCode) else code
        return cls(GrantKind.CODE_HOLDER, creds.access_id, creds.secret, peer_id, tag=tag)

    def credential(self) -> Credential:
        """The handshake credential carrying this grant as its context."""
        return Credential(self.password, self)

    @property
    def sends_keys(self) -> bool:
        """True when this side must send ``core.keys``."""
        return self.kind is GrantKind.CODE_CREATOR

    @property
    def receives_keys(self) -> bool:
        """True when this side waits for ``core.keys``."""
        return self.kind is GrantKind.CODE_HOLDER


@dataclass(frozen=True)
class IssuedCode:
    """An access code this device issued, with its terms."""

    credentials: Credentials
    access_level: str
    share: ShareKeys = field(repr=False)
    peer_id: str
    created_at: float
    expires_at: float | None
    max_uses: int | None = 1
    uses: int = 0
    tag: object = None
    id_preimage: bytes | None = field(default=None, repr=False)  #: SHA-256 -> access ID

    @property
    def access_id(self) -> str:
        """The code's public access ID."""
        return self.credentials.access_id

    def expired(self, now: float) -> bool:
        """True once the lifetime is over."""
        return self.expires_at is not None and now >= self.expires_at


class AccessCodeTable:
    """The access codes this device issued (sans-I/O; every call takes ``now``)."""

    def __init__(self) -> None:
        self._codes: dict[str, IssuedCode] = {}
        self._claims: dict[str, set[object]] = {}

    def issue(self, code: AccessCode | Credentials, share: ShareKeys, access_level: str,
              peer_id: str, *, now: float, lifetime: float | None = DEFAULT_CODE_LIFETIME,
              max_uses: int | None = 1, tag: object = None) -> IssuedCode:
        """Register a code granting ``access_level`` of ``share``.

        ``max_uses=None`` makes it multi-use without limit, ``lifetime=None``
        makes it never expire. Raises :class:`AccessError` if this device
        cannot grant the level or the ID is already issued.
        """
        creds = code.credentials if isinstance(code, AccessCode) else code
        share.grant(access_level)  # refuses a level we do not hold in full
        check_peer_id(peer_id, "our peer ID")
        if max_uses is not None and max_uses < 1:
            raise AccessError("max_uses must be at least 1 (or None for unlimited)")
        if lifetime is not None and lifetime <= 0:
            raise AccessError("lifetime must be positive (or None for no expiry)")
        if creds.access_id in self._codes:
            raise AccessError(f"access ID {creds.access_id[:16]}… is already issued")
        issued = IssuedCode(creds, access_level, share, peer_id, now,
                            None if lifetime is None else now + lifetime, max_uses, 0, tag,
                            code.raw[:8] if isinstance(code, AccessCode) else None)
        self._codes[creds.access_id] = issued
        return issued

    def get(self, access_id: str) -> IssuedCode | None:
        """The issued code with this access ID, whatever its state."""
        return self._codes.get(access_id)

    def __iter__(self) -> Iterator[IssuedCode]:
        return iter(list(self._codes.values()))

    def __len__(self) -> int:
        return len(self._codes)

    def _usable(self, access_id: str, now: float) -> IssuedCode | None:
        issued = self._codes.get(access_id)
        if issued is None or issued.expired(now):
            return None
        if issued.max_uses is not None and \
                issued.uses + len(self._claims.get(access_id, ())) >= issued.max_uses:
            return None
        return issued

    def lookup(self, access_id: str, now: float) -> Grant | None:
        """The creator's grant for a live code with a use left, else ``None``."""
        issued = self._usable(access_id, now)
        if issued is None:
            return None
        return Grant(GrantKind.CODE_CREATOR, access_id, issued.credentials.secret,
                     issued.peer_id, issued.access_level, issued.share, self, issued.tag)

    def claim(self, access_id: str, holder: object, now: float) -> bool:
        """Reserve one use for ``holder`` (a connection) while it sends keys."""
        if holder in self._claims.get(access_id, ()):
            return True
        if self._usable(access_id, now) is None:
            return False
        self._claims.setdefault(access_id, set()).add(holder)
        return True

    def release(self, access_id: str, holder: object) -> None:
        """Give back a claim whose connection ended before the acknowledgment."""
        claims = self._claims.get(access_id)
        if claims is not None:
            claims.discard(holder)
            if not claims:
                del self._claims[access_id]

    def spend(self, access_id: str, holder: object) -> IssuedCode | None:
        """The keys were acknowledged: count the use; a code with no use left is removed.

        Returns the code as updated (``uses`` incremented), or ``None`` if the
        code was cancelled meanwhile.
        """
        self.release(access_id, holder)
        issued = self._codes.get(access_id)
        if issued is None:
            return None
        issued = replace(issued, uses=issued.uses + 1)
        if issued.max_uses is not None and issued.uses >= issued.max_uses:
            del self._codes[access_id]
        else:
            self._codes[access_id] = issued
        return issued

    def cancel(self, access_id: str) -> bool:
        """Deactivate a code at once; True if it existed."""
        self._claims.pop(access_id, None)
        return self._codes.pop(access_id, None) is not None

    def expire(self, now: float) -> list[IssuedCode]:
        """Drop and return every expired code (call it now and then)."""
        gone = [c for c in self._codes.values() if c.expired(now)]
        for issued in gone:
            del self._codes[issued.access_id]
        return gone


class CredentialRegistry:
    """The server's lookup over shares, issued codes and held codes."""

    def __init__(self, codes: AccessCodeTable | None = None) -> None:
        self.codes = codes if codes is not None else AccessCodeTable()
        self._by_key_id: dict[str, Grant] = {}
        self._held: dict[str, Grant] = {}

    def add_share(self, share: ShareKeys, peer_id: str, tag: object = None) -> None:
        """Accept connections made with any key ID of ``share`` we hold."""
        for level in share.levels:
            if level.key_id_hex is not None:
                self._by_key_id[level.key_id_hex] = Grant.share_key(
                    share, level.access_level, peer_id, tag)

    def remove_share(self, share: ShareKeys) -> None:
        """Stop accepting ``share``'s key IDs."""
        for level in share.levels:
            if level.key_id_hex is not None:
                self._by_key_id.pop(level.key_id_hex, None)

    def hold_code(self, code: AccessCode | Credentials, peer_id: str,
                  tag: object = None) -> Grant:
        """Accept the code's creator connecting in to hand us the keys."""
        grant = Grant.code_holder(code, peer_id, tag)
        self._held[grant.id_hex] = grant
        return grant

    def drop_held_code(self, access_id: str) -> None:
        """Forget a held code (keys received, or the user gave up)."""
        self._held.pop(access_id, None)

    def lookup(self, id_hex: str, now: float) -> Credential | None:
        """The credential for ``id_hex``, or ``None`` (unknown, expired, spent)."""
        grant = self._by_key_id.get(id_hex) or self.codes.lookup(id_hex, now) \
            or self._held.get(id_hex)
        return None if grant is None else grant.credential()
