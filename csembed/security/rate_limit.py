"""Back-off for failed ``clearskies:2`` authentications (sans-I/O, ``now`` passed in).

Every attempt that reaches the point where the server answers with its
SPAKE2 message and confirmation MAC lets the client test one password guess,
so the server throttles those answers, separately per source address and per
requested ID (an access ID or key ID). Each key has a failure count ``n``;
the next answer is allowed ``delay(n)`` seconds after the last failure:

    delay(n) = 0                                    for n <  free_attempts
    delay(n) = min(base_delay * 2**(n - free_attempts), max_delay)   otherwise

:data:`SOURCE_SCHEDULE` (per address): 3 free tries, then 1 s doubling up to
5 minutes -- 20 wrong tries in a row from one address take at least
1+2+...+256 + 8*300 = 2911 s. :data:`ID_SCHEDULE` (per ID, to bound an attack
on one code or password spread over many addresses): 32 free tries, then 1 s
doubling up to 60 s. It is looser so that one attacking address does not lock
honest peers out of the ID, but past 32 failures it delays them too; that is
the price of bounding distributed guessing.

The server uses the limiter like this (:class:`~csembed.security.handshake.SecureSession`
does it): ``check`` before answering a client hello and hold the answer for
the returned delay; when the answer goes out, ``record_failure`` at once
(pessimistically, so parallel connections cannot share one free slot); when
the client's confirmation checks out, ``record_success`` clears both counts.
A client that disconnects after seeing the answer therefore counts as a
failure, which it must: it may have learned whether its guess was right.
Counts are forgotten ``forget_after`` seconds after the last failure, and the
table holds at most ``max_entries`` keys (oldest dropped first) so a flood of
made-up IDs cannot exhaust memory.
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
ID_SCHEDULE: Final = BackoffSchedule(free_attempts=32, base_delay=1.0, max_delay=60.0)


class _Counts:
    """Failure counts for one kind of key (source addresses or IDs)."""

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


class RateLimiter:
    """Per-source and per-ID back-off; all methods take the current time ``now``."""

    def __init__(self, source_schedule: BackoffSchedule = SOURCE_SCHEDULE,
                 id_schedule: BackoffSchedule = ID_SCHEDULE, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._sources = _Counts(source_schedule, max_entries)
        self._ids = _Counts(id_schedule, max_entries)

    def check(self, source: str, id_hex: str, now: float) -> float:
        """Seconds to wait before answering an attempt on ``id_hex`` from ``source``
        (0.0: answer now). Does not change any count."""
        return max(self._sources.wait(source, now), self._ids.wait(id_hex, now))

    def record_failure(self, source: str, id_hex: str, now: float) -> None:
        """Count one failed (or not yet confirmed) attempt against both keys."""
        self._sources.fail(source, now)
        self._ids.fail(id_hex, now)

    def record_success(self, source: str, id_hex: str) -> None:
        """A confirmed authentication: clear both keys' counts."""
        self._sources.clear(source)
        self._ids.clear(id_hex)

    def failures(self, source: str, id_hex: str, now: float) -> tuple[int, int]:
        """Current failure counts ``(for source, for id)``, for status displays and tests."""
        return self._sources.failures(source, now), self._ids.failures(id_hex, now)
