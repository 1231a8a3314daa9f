"""Peers the user removed from a share: this daemon never syncs that share with them again.

Theory of operation
-------------------
A share's keys cannot be taken back from a device that holds them, so
"removing" a device means: this daemon closes its links for that share,
refuses every new one (the check runs when a link reaches ``Ready``, the
first moment the peer's ID is known), and stops dialling it. Other members
may still sync with it; only a new share shuts it out everywhere. The set is
kept in ``removed_peers.json`` so that a restart does not forget it;
:meth:`RemovedPeers.allow` undoes a removal.
"""

from __future__ import annotations

from csembed.runtime.data_dir import DataDir
from csembed.runtime.errors import NoSuchPeer

__all__ = ["RemovedPeers"]


class RemovedPeers:
    """Share ID -> removed peer IDs, persisted in the data directory."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self._removed: dict[str, set[str]] = {}

    def load(self) -> None:
        self._removed = self.data.load_removed()

    def is_removed(self, share_id: str, peer_id: str | None) -> bool:
        return peer_id is not None and peer_id in self._removed.get(share_id, set())

    def of(self, share_id: str) -> list[str]:
        """The peers removed from one share."""
        return sorted(self._removed.get(share_id, set()))

    def remove(self, share_id: str, peer_id: str) -> None:
        self._removed.setdefault(share_id, set()).add(peer_id)
        self.data.save_removed(self._removed)

    def allow(self, share_id: str, prefix: str) -> str:
        """Undo a removal (``prefix``: the peer ID or its start); returns the peer ID."""
        wanted = prefix.strip().lower()
        found = [p for p in self._removed.get(share_id, set()) if p.startswith(wanted)]
        if len(wanted) < 4 or len(found) != 1:
            raise NoSuchPeer(f"no removed peer {prefix[:40]!r} in this share" if not found
                             else f"{len(found)} removed peers match {prefix[:40]!r}")
        self._removed[share_id].discard(found[0])
        self.data.save_removed(self._removed)
        return found[0]

    def drop_share(self, share_id: str) -> None:
        if self._removed.pop(share_id, None) is not None:
            self.data.save_removed(self._removed)
