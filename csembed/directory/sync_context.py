"""What the parts of one share's sync engine share, and the bounds a peer must keep to.

Theory of operation
-------------------
:class:`~csembed.directory.engine.ShareEngine` is a thin façade over small
parts, each holding one concern: :mod:`.local_changes` (scans),
:mod:`.planner` (what the disk should hold, what to want),
:mod:`.fetcher` and :mod:`.fetch_rsync` (transfers), :mod:`.landing`
(verify, batch, place; the one failure ladder), :mod:`.conflicts`,
:mod:`.serving` (answering peers), :mod:`.transfer_stream` (streamed reads)
and :mod:`.sync_report` (status). They find each other and the shared state
through one :class:`SyncContext`: the share (``local``, ``replica``), the
board, the random source, the time of the call being handled (``now``),
the connected peers, the keys to re-plan (``dirty``) and the report. Each
part keeps its own state private and offers the others a few named calls.

:class:`PeerBounds` derives every per-peer limit from the board, so a
hostile peer costs bounded memory: the hashes it may claim with
``directory.present`` or refuse with ``directory.not_present``, the requests
it may have queued on us, and the bytes of replies waiting for it (above
``queue_soft`` we stop reading from it -- :meth:`ShareEngine.may_read` --
and stop announcing to it; above ``queue_hard`` it is dropped with a logged
reason).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from csembed.board_profile import BoardProfile
from csembed.database import Outgoing, Replica
from csembed.directory import sync_messages as msg
from csembed.directory.local_share import LocalShare
from csembed.directory.share_policy import SyncMode
from csembed.directory.sync_report import SyncReport
from csembed.directory.transfer_fetch import PeerState

if TYPE_CHECKING:
    from csembed.directory.conflicts import Conflicts
    from csembed.directory.fetch_rsync import RsyncFetch
    from csembed.directory.fetcher import Fetcher
    from csembed.directory.landing import Landing
    from csembed.directory.local_changes import LocalChanges
    from csembed.directory.planner import Planner


@dataclass(frozen=True)
class PeerBounds:
    """Per-peer limits, from the board."""

    claims: int  #: hashes remembered from ``present`` (and from ``not_present``)
    queued_requests: int  #: ``directory.get``/``rsync.signature`` waiting to be served
    queue_soft: int  #: reply bytes queued: above, stop reading and announcing
    queue_hard: int  #: reply bytes queued: above, drop the peer

    @classmethod
    def from_board(cls, board: BoardProfile) -> PeerBounds:
        """Bounds that scale with the board's message size (its RAM budget)."""
        mem = board.memory
        soft = max(256 * 1024, mem.max_message // 4)
        return cls(claims=max(1024, mem.max_message // 512),
                   queued_requests=max(64, min(4096, mem.max_message // 256)),
                   queue_soft=soft, queue_hard=2 * soft)


class SyncContext:
    """The state the engine's parts share (see the module docstring)."""

    planner: Planner
    fetcher: Fetcher
    rsync: RsyncFetch
    landing: Landing
    conflicts: Conflicts
    changes: LocalChanges

    def __init__(self, local: LocalShare, replica: Replica, board: BoardProfile,
                 rng: random.Random, extensions: frozenset[str], error_retry: float,
                 presence_max: int | None) -> None:
        self.local = local
        self.replica = replica
        self.board = board
        self.rng = rng
        self.extensions = extensions
        self.read_only = replica.read_only
        self.error_retry = error_retry
        self.now = 0.0
        self.peers: dict[Any, PeerState] = {}
        self.dirty: set[str] = set()  #: keys to plan again
        self.report = SyncReport()
        self.mode = SyncMode.SEND_RECEIVE  #: which way changes flow (:mod:`.share_policy`)
        self._presence_max = presence_max

    # -- limits from the board (read each time: the daemon may swap the board) ---------

    @property
    def chunk_size(self) -> int:
        """Payload chunk sent, and piece of a file read, at once."""
        return self.board.memory.chunk_size

    @property
    def max_open(self) -> int:
        """Files fetched at once."""
        return self.board.memory.max_open_transfers

    @property
    def max_in_flight(self) -> int:
        """Bytes requested and not yet received, all transfers."""
        return self.board.memory.max_bytes_in_flight

    @property
    def presence_max(self) -> int:
        """Largest presence filter sent or accepted."""
        return self._presence_max or min(1 << 20, self.board.memory.max_message)

    @property
    def bounds(self) -> PeerBounds:
        """Per-peer limits."""
        return PeerBounds.from_board(self.board)

    @property
    def now_ns(self) -> int:
        """``now`` in nanoseconds (record update times)."""
        return int(self.now * 1e9)

    # -- output ----------------------------------------------------------------------

    def route(self, items: list[Outgoing] | tuple[Outgoing, ...]) -> None:
        """Queue the replica's messages for their connections."""
        for item in items:
            peer = self.peers.get(item.conn_id)
            if peer is not None:
                peer.out.push(item.encode())

    def announce(self, sha256: str, source: Any = None) -> None:
        """``directory.present`` to every peer but ``source`` (it sent us the content).

        A peer whose replies back up gets a fresh presence filter once it
        drains instead (:meth:`PeerState.presence_stale`).
        """
        for peer in self.peers.values():
            if peer.directory and peer.conn_id != source:
                self.announce_to(peer, sha256)

    def announce_many(self, sha256s: Sequence[str]) -> None:
        """:meth:`announce` each of ``sha256s`` to every peer: as one
        ``directory.present_many`` per :data:`~.sync_messages.MAX_PRESENT_MANY`
        hashes to a peer that takes it, one ``directory.present`` each otherwise."""
        if not sha256s:
            return
        soft = self.bounds.queue_soft
        for peer in self.peers.values():
            if not peer.directory:
                continue
            if not peer.present_many:
                for sha in sha256s:
                    self.announce_to(peer, sha)
                continue
            for first in range(0, len(sha256s), msg.MAX_PRESENT_MANY):
                if peer.out.queued_control_bytes >= soft:
                    peer.presence_stale = True
                    break
                part = tuple(sha256s[first:first + msg.MAX_PRESENT_MANY])
                peer.out.push(msg.encode(msg.PresentMany(part)))

    def announce_to(self, peer: PeerState, sha256: str) -> None:
        """``directory.present`` to ``peer`` (or a fresh filter later, if it backs up)."""
        if peer.out.queued_control_bytes >= self.bounds.queue_soft:
            peer.presence_stale = True
        else:
            peer.out.push(msg.encode(msg.Present(sha256)))
