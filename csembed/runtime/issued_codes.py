"""The access codes this daemon issued: terms, uses, expiry, revocation, persistence.

Theory of operation
-------------------
:class:`IssuedCodes` wraps the sans-I/O
:class:`~csembed.protocol.core_access.AccessCodeTable` that every incoming
handshake is checked against (it runs on the loop clock) and keeps, beside
it, what the table does not: each code's text, share and wall-clock creation
time, and the uses counted before the last restart. It persists them in
``codes.json`` in wall-clock time (:class:`~csembed.runtime.data_dir.StoredCode`)
so that a code's 24 hours keep running while the daemon is stopped.

A code leaves the table when it is spent, expires, is revoked or its share is
removed; the last few that left are remembered (in memory) with why, so that
``csembed codes`` can say "used" or "expired" rather than forget it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from csembed.access_code import AccessCode
from csembed.errors import CsembedError
from csembed.protocol.core_access import AccessCodeTable, IssuedCode
from csembed.runtime.data_dir import DataDir, StoredCode
from csembed.runtime.errors import NoSuchCode
from csembed.security.keys import ShareKeys

__all__ = ["IssuedCodes", "ShareLookup"]

log = logging.getLogger("csembed.daemon")

ENDED_KEPT = 20  #: codes that ended, remembered for ``csembed codes``

ShareLookup = Callable[[str], "tuple[ShareKeys, str] | None"]
"""share ID -> (its keys, our peer ID in it), or ``None`` for a share we no longer run."""


@dataclass(frozen=True)
class _Meta:
    text: str
    share_id: str
    created_at: float  #: wall clock
    uses_before: int  #: uses counted before this run's table entry was made
    mode: str = ""
    max_uses: int | None = None  #: in all, as issued


class IssuedCodes:
    """Issued codes on a loop clock ``clock`` and a wall clock ``wall``; see the module
    docstring."""

    def __init__(self, data: DataDir, clock: Callable[[], float],
                 wall: Callable[[], float] = time.time) -> None:
        self.data = data
        self.table = AccessCodeTable()
        self._clock = clock
        self._wall = wall
        self._meta: dict[str, _Meta] = {}
        self._ended: deque[dict[str, Any]] = deque(maxlen=ENDED_KEPT)

    def __iter__(self) -> Iterator[IssuedCode]:
        return iter(self.table)

    def is_ours(self, access_id: str) -> bool:
        """True for a code this daemon issued (live or remembered)."""
        return self.table.get(access_id) is not None or access_id in self._meta

    def issue(self, share_id: str, keys: ShareKeys, mode: str, peer_id: str, *,
              max_uses: int | None, lifetime: float | None) -> AccessCode:
        """A new code for ``mode`` of a share, saved at once."""
        code = AccessCode.generate()
        self.table.issue(code, keys, mode, peer_id, now=self._clock(), lifetime=lifetime,
                         max_uses=max_uses, tag=("share", share_id))
        self._meta[code.access_id] = _Meta(code.text, share_id, self._wall(), 0, mode, max_uses)
        self.save()
        return code

    def load(self, share_of: ShareLookup) -> None:
        """Put the stored codes of shares we run back in the table; drop the rest."""
        loop_now, wall = self._clock(), self._wall()
        changed = False
        for stored in self.data.load_codes():
            share = share_of(stored.share_id)
            left = None if stored.max_uses is None else stored.max_uses - stored.uses
            if share is None or (left is not None and left < 1) or \
                    (stored.expires_at is not None and stored.expires_at <= wall):
                changed = True
                continue
            keys, peer_id = share
            try:
                code = AccessCode.parse(stored.code)
                self.table.issue(code, keys, stored.access_level, peer_id, now=loop_now,
                                 lifetime=None if stored.expires_at is None
                                 else stored.expires_at - wall, max_uses=left,
                                 tag=("share", stored.share_id))
            except CsembedError as exc:
                log.warning("dropping a stored access code: %s", exc)
                changed = True
                continue
            self._meta[code.access_id] = _Meta(stored.code, stored.share_id,
                                               stored.created_at, stored.uses,
                                               stored.access_level, stored.max_uses)
        if changed:
            self.save()

    def _stored(self, issued: IssuedCode) -> StoredCode | None:
        meta = self._meta.get(issued.access_id)
        if meta is None:
            return None
        loop_now, wall = self._clock(), self._wall()
        return StoredCode(
            code=meta.text, share_id=meta.share_id, access_level=issued.access_level,
            created_at=meta.created_at,
            expires_at=None if issued.expires_at is None
            else wall + (issued.expires_at - loop_now),
            max_uses=None if issued.max_uses is None else meta.uses_before + issued.max_uses,
            uses=meta.uses_before + issued.uses)

    def save(self) -> None:
        """Write the live codes; forget the meta of codes that left the table."""
        stored = [s for issued in self.table if (s := self._stored(issued)) is not None]
        live = {issued.access_id for issued in self.table}
        for access_id in [a for a in self._meta if a not in live]:
            meta = self._meta.pop(access_id)
            self._remember(meta, None, "used")
        self.data.save_codes(stored)

    def _remember(self, meta: _Meta, stored: StoredCode | None, why: str) -> None:
        entry: dict[str, Any] = {
            "code": meta.text, "share_id": meta.share_id, "state": why, "mode": meta.mode,
            "max_uses": meta.max_uses, "created_at": meta.created_at, "ended_at": self._wall()}
        if why == "used":
            entry["uses"] = meta.max_uses
        if stored is not None:
            entry.update(mode=stored.access_level, uses=stored.uses, max_uses=stored.max_uses,
                         expires_at=stored.expires_at)
        self._ended.appendleft(entry)

    def _end(self, issued: IssuedCode, why: str) -> None:
        stored = self._stored(issued)
        meta = self._meta.pop(issued.access_id, None)
        if meta is not None:
            self._remember(meta, stored, why)

    def spent(self) -> None:
        """A code was redeemed: persist the count (a used-up one is remembered as used)."""
        self.save()

    def expire(self) -> bool:
        """Drop expired codes; True (and saved) if any went."""
        gone = self.table.expire(self._clock())
        for issued in gone:
            self._end(issued, "expired")
            log.info("access code %s… expired", issued.access_id[:12])
        if gone:
            self.save()
        return bool(gone)

    def revoke(self, which: str) -> dict[str, Any]:
        """Revoke the live code whose text (or its start, or its access ID's start) is
        ``which``; returns it as listed. :class:`NoSuchCode` if none or several match."""
        wanted = which.strip().upper().replace("-", "").replace(" ", "")
        if wanted.startswith("CLEARSKIES://DIRECTORY/"):
            wanted = wanted.rsplit("/", 1)[1]
        found = [issued for issued in self.table
                 if (meta := self._meta.get(issued.access_id)) is not None and len(wanted) >= 4
                 and (meta.text.startswith(wanted)
                      or issued.access_id.startswith(which.strip().lower()))]
        if not found:
            raise NoSuchCode(f"no live access code matches {which[:40]!r} "
                             "(see `csembed codes`)")
        if len(found) > 1:
            raise NoSuchCode(f"{len(found)} access codes match {which[:40]!r}; give more of it")
        issued = found[0]
        listed = self._listed(issued)
        self._end(issued, "revoked")
        self.table.cancel(issued.access_id)
        self.save()
        log.info("access code %s… revoked", issued.access_id[:12])
        return listed

    def drop_share(self, share_id: str) -> None:
        """The share was removed: its codes end with it."""
        for issued in self.table:
            if issued.tag == ("share", share_id):
                self.table.cancel(issued.access_id)
                self._meta.pop(issued.access_id, None)
        self.save()

    def _listed(self, issued: IssuedCode) -> dict[str, Any]:
        stored = self._stored(issued)
        assert stored is not None
        return {"code": stored.code, "access_id": issued.access_id,
                "share_id": stored.share_id, "mode": stored.access_level, "state": "live",
                "uses": stored.uses, "max_uses": stored.max_uses,
                "created_at": stored.created_at, "expires_at": stored.expires_at}

    def listing(self) -> list[dict[str, Any]]:
        """Live codes, then the ones that ended lately (newest first)."""
        return [self._listed(i) for i in self.table if i.access_id in self._meta] + \
            list(self._ended)
