"""Admission of connections that have not authenticated yet (issue 10, item 1).

Theory of operation
-------------------
A listener cannot tell a slow legitimate peer from a hostile one until the
handshake is over, so it bounds how many may be unauthenticated at once: the
board's ``memory.max_handshakes``. When a new connection would exceed it, an
older one is closed to make room -- the oldest of the *source address holding
the most* of them. A flood from a few addresses thus pushes out only its own
connections, while a peer holding a key or a code, arriving from anywhere
else, still gets a slot and completes.

:class:`PreauthAdmission` is that rule alone, sans-I/O: ``admit(key,
source)`` returns the keys to close, ``forget(key)`` frees a slot (the
connection authenticated or ended). :class:`PreauthGate` applies it to live
connections: one gate is shared by every listener of a daemon (TCP on IPv4
and IPv6, and uTP), so a flood on one transport counts against the same
budget and cannot lock the others out. The gate also notices when a burst of
unauthenticated connections has ended and then gives the memory they used
back to the system once (:func:`~csembed.runtime.heap_trim.give_back`), not
once per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from csembed.runtime.heap_trim import give_back

__all__ = ["PreauthAdmission", "PreauthGate", "Unauthenticated"]

log = logging.getLogger("csembed.session")

SETTLE = 2.0
"""Seconds without an unauthenticated connection ending after which a burst is over."""
BURST = 16
"""Unauthenticated connections that must have ended for a burst to be worth a give-back."""


Key = TypeVar("Key")  #: any hashable handle of a connection


class PreauthAdmission(Generic[Key]):
    """Which unauthenticated connections to close when one more arrives.

    Keys are any hashable handles of connections; ``budget`` is how many may
    be pending at once (at least 1; it may change between calls)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._order = 0
        self._source: dict[Key, str] = {}  #: key -> its source
        #: source -> its keys, each with its arrival number, oldest first
        self._by_source: dict[str, OrderedDict[Key, int]] = {}
        self.evicted = 0  #: connections closed to make room, in total

    def __len__(self) -> int:
        return len(self._source)

    def __contains__(self, key: object) -> bool:
        return key in self._source

    def keys(self) -> list[Key]:
        """The pending keys (in no particular order)."""
        return list(self._source)

    def pending_from(self, source: str) -> int:
        """How many of the pending connections came from ``source``."""
        return len(self._by_source.get(source, ()))

    def admit(self, key: Key, source: str) -> list[Key]:
        """Count ``key`` (from ``source``) as pending; returns the keys to close
        to stay within the budget, already forgotten, oldest first. The new key is
        never among them."""
        if key in self._source:
            raise ValueError(f"{key!r} is already pending")
        victims: list[Key] = []
        while self._source and len(self._source) >= max(1, self.budget):
            victims.append(self._pick())
            self.forget(victims[-1])
        self.evicted += len(victims)
        self._order += 1
        self._source[key] = source
        self._by_source.setdefault(source, OrderedDict())[key] = self._order
        return victims

    def forget(self, key: Key) -> None:
        """Stop counting ``key`` (nothing happens if it is not pending)."""
        source = self._source.pop(key, None)
        if source is None:
            return
        keys = self._by_source[source]
        del keys[key]
        if not keys:
            del self._by_source[source]

    def _pick(self) -> Key:
        # The source with the most pending; among equals, the one whose oldest
        # connection is oldest. Its oldest connection goes.
        most = max(len(keys) for keys in self._by_source.values())
        oldest: tuple[int, Key] | None = None
        for keys in self._by_source.values():
            if len(keys) == most:
                key, order = next(iter(keys.items()))
                if oldest is None or order < oldest[0]:
                    oldest = (order, key)
        assert oldest is not None
        return oldest[1]


class Unauthenticated(Protocol):
    """What the gate needs of a connection
    (a :class:`~csembed.runtime.session_stream.SessionStream`)."""

    @property
    def authenticated(self) -> bool:
        """The peer proved its secret."""
        ...

    @property
    def finished(self) -> bool:
        """The connection is closed or closing."""
        ...

    def abort(self) -> None:
        """Drop the connection at once."""
        ...


class PreauthGate:
    """A :class:`PreauthAdmission` over live connections, for every listener of a
    daemon (module docstring). ``budget()`` is asked at each arrival (the
    board's ``max_handshakes``, through the core settings)."""

    def __init__(self, budget: Callable[[], int]) -> None:
        self._budget = budget
        self.admission: PreauthAdmission[Unauthenticated] = PreauthAdmission(budget())
        self._ended = 0  #: unauthenticated connections ended since the last give-back
        self._last_end = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.give_backs = 0  #: bursts after which memory was given back

    def __len__(self) -> int:
        return len(self.admission)

    def admit(self, conn: Unauthenticated, source: str) -> None:
        """Count a newly accepted connection from ``source``; close older ones as
        the budget requires."""
        self.admission.budget = self._budget()
        if len(self.admission) >= self.admission.budget:
            for other in self.admission.keys():  # free the slots of those that authenticated
                if other.authenticated or other.finished:
                    self.admission.forget(other)
        before = self.admission.evicted
        for victim in self.admission.admit(conn, source):
            victim.abort()
        evicted = self.admission.evicted
        for count in range(before + 1, evicted + 1):
            if count & (count - 1) == 0:  # 1, 2, 4, ...: visible, not a log flood
                log.warning("%d unauthenticated connection(s) closed so far: more than "
                            "%d at once were still authenticating", count,
                            self.admission.budget)

    def ended(self, conn: Unauthenticated) -> None:
        """``conn`` ended; frees its slot. Once enough unauthenticated ones ended
        and none for :data:`SETTLE` seconds, the memory is given back."""
        self.admission.forget(conn)
        if conn.authenticated:
            return
        self._ended += 1
        loop = asyncio.get_running_loop()
        self._last_end = loop.time()
        if self._ended >= BURST and self._timer is None:
            self._timer = loop.call_at(self._last_end + SETTLE, self._settle)

    def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        quiet_at = self._last_end + SETTLE
        if loop.time() < quiet_at:  # still ending: look again when it may be quiet
            self._timer = loop.call_at(quiet_at, self._settle)
            return
        self._timer = None
        self._ended = 0
        self.give_backs += 1
        give_back()

    def close(self) -> None:
        """Cancel the pending give-back, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

