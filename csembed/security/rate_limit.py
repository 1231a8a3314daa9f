"""Limits on password guessing for ``clearskies:2`` (sans-I/O, ``now`` passed in).

Every attempt that reaches the point where the server answers with its
SPAKE2 message and confirmation MAC lets the client test one password guess,
so the server rations those answers in two ways:

**Per source address**, a back-off. Each address has a failure count ``n``;
its next answer is allowed ``delay(n)`` seconds after its last failure::

    delay(n) = 0                                    for n <  free_attempts
    delay(n) = min(base_delay * 2**(n - free_attempts), max_delay)   otherwise

:data:`SOURCE_SCHEDULE`: 3 free tries, then 1 s doubling up to 5 minutes --
20 wrong tries in a row from one address take at least
1+2+...+256 + 8*300 = 2911 s.

**Per ID** (an access ID or key ID, which is public: trackers and LAN
announcements carry it), a *guess budget*: a token bucket of ``burst``
guesses refilled at ``rate`` per second (:data:`ID_BUDGET`: 64, then 4 a
second), which bounds a guessing attack spread over many addresses. A plain
budget would let those addresses lock out the holder of the right code (an
earlier design held everyone for up to a minute after 32 failures, so 60
attacking addresses kept an honest peer out for minutes). So the last
``reserve`` tokens are kept for sources with a clean record: an address with
failures on record is answered only while the bucket holds more than
``reserve``; an address without one (an honest peer has none, since success
clears its count) may take the reserve too. Addresses that keep guessing
thus keep the bucket at ``reserve`` and never starve a newcomer. Only an
attacker with a stream of never-seen addresses competes with a newcomer for
the reserve, each of them then waiting about ``1 / rate`` per address ahead
of it. The rate is generous because an access code's secret is 64 random
bits: 4 guesses a second find it in 10**11 years on average; what the budget
mainly bounds is the work (one SPAKE2 answer per guess).

The server uses the limiter like this (:class:`~csembed.security.handshake.SecureSession`
does it): ``check`` before answering a client hello and hold the answer for
the returned delay -- or, when that is longer than the session's
``hold_limit``, close the connection unanswered so a held hello never pins a
connection (the client retries later; nothing is counted). When the answer
goes out, ``record_failure`` at once (pessimistically, so parallel
connections cannot share one free slot); when the client's confirmation
checks out, ``record_success`` clears the source's count and gives the
guess back to the ID's budget. A client that disconnects after seeing the
answer therefore counts as a failure, which it must: it may have learned
whether its guess was right. Counts are forgotten ``forget_after`` seconds
after the last failure, and each table holds at most ``max_entries`` keys
(oldest dropped first) so a flood of made-up IDs cannot exhaust memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class BackoffSchedule:
    """How fast one key's delays grow (see module docstring)."""

    free_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 300.0
    forget_after: float = 3600.0

    def __post_init__(self) -> None:
        if self.free_attempts < 0 or self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise ValueError(f"invalid back-off schedule {self}")
        if self.forget_after < self.max_delay:
            raise ValueError("forget_after must be at least max_delay")

    def delay(self, failures: int) -> float:
        """Seconds after the last failure before the next attempt may be answered."""
        if failures < self.free_attempts:
            return 0.0
        exponent = min(failures - self.free_attempts, 64)
        return float(min(self.base_delay * 2.0 ** exponent, self.max_delay))


SOURCE_SCHEDULE: Final = BackoffSchedule(free_attempts=3, base_delay=1.0, max_delay=300.0)


@dataclass(frozen=True)
class GuessBudget:
    """How many guesses one ID may be tried with (see module docstring)."""

    rate: float = 4.0  #: guesses per second, in the long run
    burst: int = 64  #: guesses at once, after a quiet time
    reserve: int = 16  #: tokens only sources without failures may take

    def __post_init__(self) -> None:
        if not self.rate > 0 or not 0 <= self.reserve < self.burst:
            raise ValueError(f"invalid guess budget {self}")


ID_BUDGET: Final = GuessBudget()


class _Counts:
    """Failure counts per source address."""

    def __init__(self, schedule: BackoffSchedule, max_entries: int) -> None:
        self.schedule = schedule
        self.max_entries = max_entries
        self._table: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _get(self, key: str, now: float) -> tuple[int, float]:
        entry = self._table.get(key)
        if entry is None:
            return 0, now
        if now - entry[1] >= self.schedule.forget_after:
            del self._table[key]
            return 0, now
        return entry

    def wait(self, key: str, now: float) -> float:
        failures, last = self._get(key, now)
        return max(0.0, last + self.schedule.delay(failures) - now) if failures else 0.0

    def fail(self, key: str, now: float) -> None:
        failures, _ = self._get(key, now)
        self._table[key] = (failures + 1, now)
        self._table.move_to_end(key)
        while len(self._table) > self.max_entries:
            self._table.popitem(last=False)

    def clear(self, key: str) -> None:
        self._table.pop(key, None)

    def failures(self, key: str, now: float) -> int:
        return self._get(key, now)[0]


class _Budgets:
    """A guess budget (token bucket) per ID; an ID not in the table has a full one."""

    def __init__(self, budget: GuessBudget, max_entries: int) -> None:
        self.budget = budget
        self.max_entries = max_entries
        # id -> (tokens, time of that balance, failures since the bucket was full)
        self._table: OrderedDict[str, tuple[float, float, int]] = OrderedDict()

    def _get(self, key: str, now: float) -> tuple[float, int]:
        entry = self._table.get(key)
        if entry is None:
            return float(self.budget.burst), 0
        tokens, then, failures = entry
        tokens = min(float(self.budget.burst),
                     tokens + max(0.0, now - then) * self.budget.rate)
        if tokens >= self.budget.burst:
            del self._table[key]
            return tokens, 0
        return tokens, failures

    def wait(self, key: str, clean_source: bool, now: float) -> float:
        tokens, _ = self._get(key, now)
        need = 1.0 if clean_source else self.budget.reserve + 1.0
        return 0.0 if tokens >= need else (need - tokens) / self.budget.rate

    def take(self, key: str, now: float) -> None:
        tokens, failures = self._get(key, now)
        self._table[key] = (tokens - 1.0, now, failures + 1)
        self._table.move_to_end(key)
        while len(self._table) > self.max_entries:
            self._table.popitem(last=False)

    def give_back(self, key: str, now: float) -> None:
        if key in self._table:
            tokens, failures = self._get(key, now)
            self._table[key] = (tokens + 1.0, now, max(0, failures - 1))

    def failures(self, key: str, now: float) -> int:
        return self._get(key, now)[1]


class RateLimiter:
    """Per-source back-off and per-ID guess budget; all methods take the time ``now``."""

    def __init__(self, source_schedule: BackoffSchedule = SOURCE_SCHEDULE,
                 id_budget: GuessBudget = ID_BUDGET, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._sources = _Counts(source_schedule, max_entries)
        self._ids = _Budgets(id_budget, max_entries)

    def check(self, source: str, id_hex: str, now: float) -> float:
        """Seconds to wait before answering an attempt on ``id_hex`` from ``source``
        (0.0: answer now). Does not change any count."""
        clean = self._sources.failures(source, now) == 0
        return max(self._sources.wait(source, now), self._ids.wait(id_hex, clean, now))

    def record_failure(self, source: str, id_hex: str, now: float) -> None:
        """Count one failed (or not yet confirmed) attempt against both keys."""
        self._sources.fail(source, now)
        self._ids.take(id_hex, now)

    def record_success(self, source: str, id_hex: str, now: float | None = None) -> None:
        """A confirmed authentication: clear the source's count and return the
        guess its answer took to the ID's budget."""
        self._sources.clear(source)
        if now is not None:
            self._ids.give_back(id_hex, now)

    def failures(self, source: str, id_hex: str, now: float) -> tuple[int, int]:
        """Current failure counts ``(for source, for id)``, for status displays and tests;
        the ID's count is of guesses not yet refilled."""
        return self._sources.failures(source, now), self._ids.failures(id_hex, now)
