"""Bookkeeping of the fetching side: what we want, from whom, and what is in flight.

Theory of operation
-------------------
Content is wanted by SHA-256 (:class:`Want`): one want may serve several keys
holding the same bytes; once it is in place at one key the others are filled
by a local copy. Each connected peer has a :class:`PeerState`: its presence
(the bloom filter it sent, the hashes it announced with ``directory.present``
since, and the hashes it told us it does not have), its outgoing queue and
its outstanding requests in the order we sent them. What a peer tells us is
remembered within bounds (:meth:`PeerState.claim`, :meth:`PeerState.refuse`):
past ``limit`` announced hashes we forget them and ask for a fresh filter,
which covers them all; past ``limit`` refusals the oldest go.

Wants are picked in random order (the draft: "so that if many peers are
involved with the directory, the files spread as quickly as possible") from
:class:`PickQueue`, whose random source is injected; files that fit in one
request are picked before bigger ones. A want that no
connected peer claims waits aside until presence changes (a filter arrives, a
``present``, a new peer), so a long list of unobtainable files costs nothing
per scheduling round. :class:`Transfer` is one file being fetched from one
peer, either by ranged ``directory.get`` requests (several outstanding,
each a few chunks, pipelined within a window) or by one
``rsync.signature`` exchange; :class:`Request` is one outstanding request.

Nothing here touches the disk or the network; :mod:`.engine` drives it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csembed.directory.bloom import BloomFilter
from csembed.directory.filestore import Download
from csembed.directory.sync_messages import PRESENT_MANY_EXTENSION
from csembed.directory.transfer_serve import OutgoingQueue

if TYPE_CHECKING:
    from csembed.directory.transfer_stream import RemoteStream
    from csembed.rsync import Patcher


@dataclass(frozen=True)
class PeerInfo:
    """What the runtime knows of a connected peer once the core handshake is done.

    ``extensions`` are the extensions negotiated on this connection
    (``database``, ``directory``, ``rsync``, ...).
    """

    peer_id: str
    read_only: bool
    extensions: frozenset[str] = frozenset({"database", "directory", "rsync"})


@dataclass
class Want:
    """Content we need, and the keys that need it (in the order they asked).

    Only keys are kept; their values are read from the database when the
    transfer starts, so a long list of wanted files costs little memory.
    """

    sha256: str
    size: int
    keys: dict[str, None] = field(default_factory=dict)
    not_before: float = 0.0  #: do not try before this time (after a failure)
    failures: int = 0


@dataclass(eq=False)
class Request:
    """One outstanding request on one connection."""

    kind: str  #: ``get``, ``rsync`` or ``stream``
    sha256: str
    start: int
    count: int
    transfer: Transfer | None = None  #: ``None`` once cancelled: data is then discarded
    stream: RemoteStream | None = None
    received: int = 0
    ranged: bool = True


@dataclass(eq=False)
class Transfer:
    """One file being fetched from one peer into a :class:`Download`."""

    sha256: str
    key: str
    conn_id: Any
    peer_id: str
    kind: str  #: ``get`` or ``rsync``
    download: Download
    started: float
    next_offset: int = 0  #: first byte not yet requested
    requests: list[Request] = field(default_factory=list)
    patcher: Patcher | None = None
    basis: Any = None  #: the open basis of an rsync transfer
    basis_sha256: str | None = None

    @property
    def size(self) -> int:
        """Bytes of the whole file."""
        return self.download.size

    @property
    def done(self) -> int:
        """Bytes written so far (resumed bytes included)."""
        return self.download.size - self.download.remaining


class PeerState:
    """One connection's view of its peer."""

    def __init__(self, conn_id: Any, info: PeerInfo) -> None:
        self.conn_id = conn_id
        self.info = info
        self.out = OutgoingQueue()
        self.filter: BloomFilter | None = None  #: ``None`` until the peer sent one
        self.present: set[str] = set()
        self.absent: dict[str, float] = {}  #: refused content -> when to ask again
        self.presence_queued = False  #: our filter is queued for it (one at a time)
        self.presence_stale = False  #: announcements skipped: send a filter when drained
        self.presence_asked = False  #: we asked it for a fresh filter
        self.requests: deque[Request] = deque()
        self.sink: Any = None  #: receives the payload of the message being read
        self.bytes_received = 0  #: payload bytes received
        self.bytes_sent = 0  #: payload bytes sent

    @property
    def directory(self) -> bool:
        """Whether the directory extension runs on this connection."""
        return "directory" in self.info.extensions

    @property
    def rsync(self) -> bool:
        """Whether the rsync extension runs on this connection."""
        return "rsync" in self.info.extensions

    @property
    def present_many(self) -> bool:
        """Whether the peer takes ``directory.present_many`` (extension ``.present_many``)."""
        return PRESENT_MANY_EXTENSION in self.info.extensions

    def may_have(self, sha256: str, now: float) -> bool:
        """Whether the peer claims this content (filter, ``present``), less recent refusals."""
        until = self.absent.get(sha256)
        if until is not None:
            if until > now:
                return False
            del self.absent[sha256]
        if sha256 in self.present:
            return True
        return self.filter is not None and self.filter.may_contain(sha256)

    def claim(self, sha256: str, limit: int) -> bool:
        """The peer announced ``sha256``; False when too many: ask it for a filter instead."""
        self.absent.pop(sha256, None)
        if sha256 in self.present:
            return True
        if len(self.present) >= limit:
            self.present.clear()
            return False
        self.present.add(sha256)
        return True

    def refuse(self, sha256: str, until: float, limit: int) -> None:
        """The peer does not have ``sha256``: do not ask before ``until``."""
        self.absent.pop(sha256, None)
        while len(self.absent) >= limit:
            del self.absent[next(iter(self.absent))]
        self.absent[sha256] = until

    def find(self, kind: tuple[str, ...], sha256: str, start: int | None) -> Request | None:
        """The oldest outstanding request of these kinds for ``sha256`` (at ``start``)."""
        for request in self.requests:
            if request.kind in kind and request.sha256 == sha256 and (
                    start is None or request.start == start):
                return request
        return None


class _Pool:
    """Hashes picked in random order: a list with an index, O(1) add, remove and pick."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, sha256: str) -> None:
        if sha256 not in self.index:
            self.index[sha256] = len(self.items)
            self.items.append(sha256)

    def discard(self, sha256: str) -> None:
        index = self.index.pop(sha256, None)
        if index is None:
            return
        last = self.items.pop()
        if last != sha256:
            self.items[index] = last
            self.index[last] = index

    def pick(self, rng: random.Random) -> str:
        chosen = self.items[rng.randrange(len(self.items))]
        self.discard(chosen)
        return chosen


class PickQueue:
    """Wanted hashes: ready pools picked at random, and a waiting room.

    Hashes that ``is_small`` says fit in one request (set by the fetcher) are
    kept in a pool of their own, picked first, so that a short file is not
    left waiting behind many big ones.
    """

    def __init__(self, rng: random.Random,
                 is_small: Callable[[str], bool] | None = None) -> None:
        self._rng = rng
        self.is_small = is_small
        self._small = _Pool()
        self._other = _Pool()
        self.waiting: set[str] = set()

    def __len__(self) -> int:
        return len(self._small.items) + len(self._other.items)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._small.index or sha256 in self._other.index \
            or sha256 in self.waiting

    def add(self, sha256: str) -> None:
        """Make ``sha256`` ready to be picked."""
        self.waiting.discard(sha256)
        if sha256 in self._small.index or sha256 in self._other.index:
            return
        small = self.is_small is not None and self.is_small(sha256)
        (self._small if small else self._other).add(sha256)

    def discard(self, sha256: str) -> None:
        """Forget ``sha256`` wherever it is."""
        self.waiting.discard(sha256)
        self._small.discard(sha256)
        self._other.discard(sha256)

    def pick(self, *, small: bool = True, big: bool = True) -> str | None:
        """A random ready hash, removed from the pool: a small one if any (and
        ``small``), else any other (if ``big``)."""
        if small and self._small.items:
            return self._small.pick(self._rng)
        if big and self._other.items:
            return self._other.pick(self._rng)
        return None

    def wait(self, sha256: str) -> None:
        """Park ``sha256`` until :meth:`wake` (no peer has it now)."""
        self.discard(sha256)
        self.waiting.add(sha256)

    def wake(self, sha256: str | None = None) -> None:
        """Move one waiting hash (or all of them) back to the ready pool."""
        if sha256 is None:
            for item in sorted(self.waiting):
                self.add(item)
        elif sha256 in self.waiting:
            self.add(sha256)
