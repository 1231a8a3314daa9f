"""Which addresses may be dialled now: pacing per address (sans-I/O, ``now`` passed in).

Addresses come from trackers and LAN announcements, so an attacker can pick
them: a malicious tracker, or forged registrations on an honest one, could
make a daemon dial thousands of addresses -- its own memory going with each
connection, and the daemon turned into a tool against a third party's
server. The connection manager therefore asks :class:`DialPolicy` before
every dial:

* at most ``per_minute`` dials to one address (host and port) in any 60 s
  window, whichever target (peer ID, share, code) asks for it, so many forged
  peer IDs listing one address cost no more than one;
* after a failed dial (refused, timed out, or a connection that never
  authenticated) the address waits ``initial * 2**(failures - 1)`` seconds,
  capped at ``maximum``; a dial that reached an authenticated peer clears it.

Manual peers (``--peer``, the ``peers`` setting) are the owner's choice, not
an attacker's: the manager does not hold them back by this policy (their
targets still back off after failures), so that trying one code after
another against one's own device is not refused for minutes.

The table is bounded (``max_entries``, least recently used dropped first).
The cap on dials in progress and on targets lives in the manager, which
owns the tasks.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["DialPolicy"]

Address = tuple[str, int]
WINDOW = 60.0  #: seconds of the per-address dial count


@dataclass
class _Entry:
    recent: deque[float] = field(default_factory=deque)  #: start times within the window
    failures: int = 0
    not_before: float = 0.0


class DialPolicy:
    """Per-address pacing of outgoing dials; see the module docstring."""

    def __init__(self, per_minute: int = 4, initial: float = 1.0, maximum: float = 300.0,
                 max_entries: int = 4096) -> None:
        if per_minute < 1 or not 0 < initial <= maximum or max_entries < 1:
            raise ValueError("invalid dial policy")
        self.per_minute = per_minute
        self.initial = initial
        self.maximum = maximum
        self.max_entries = max_entries
        self._table: OrderedDict[Address, _Entry] = OrderedDict()

    def _entry(self, address: Address, now: float) -> _Entry:
        entry = self._table.get(address)
        if entry is None:
            entry = self._table[address] = _Entry()
            while len(self._table) > self.max_entries:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(address)
        while entry.recent and entry.recent[0] <= now - WINDOW:
            entry.recent.popleft()
        return entry

    def wait(self, address: Address, now: float) -> float:
        """Seconds until ``address`` may be dialled (0.0: now)."""
        entry = self._table.get(address)
        if entry is None:
            return 0.0
        entry = self._entry(address, now)
        wait = entry.not_before - now
        if len(entry.recent) >= self.per_minute:
            wait = max(wait, entry.recent[0] + WINDOW - now)
        return max(0.0, wait)

    def started(self, address: Address, now: float) -> None:
        """A dial to ``address`` begins."""
        self._entry(address, now).recent.append(now)

    def failed(self, address: Address, now: float) -> None:
        """The dial failed or never authenticated: back off from the address."""
        entry = self._entry(address, now)
        entry.failures += 1
        delay = min(self.initial * 2.0 ** min(entry.failures - 1, 64), self.maximum)
        entry.not_before = now + delay

    def succeeded(self, address: Address) -> None:
        """The dial reached an authenticated peer: forget the address's failures."""
        entry = self._table.get(address)
        if entry is not None:
            entry.failures = 0
            entry.not_before = 0.0

    def __len__(self) -> int:
        return len(self._table)
