"""Bandwidth limits: a token bucket (sans-I/O), its asyncio face, and a throughput meter.

Theory of operation
-------------------
:class:`TokenBucket` holds up to ``burst`` tokens (bytes) and gains ``rate``
tokens per second. ``take(n, now)`` removes ``n`` tokens at once -- the
balance may go negative, a debt -- and returns how long the caller must wait
before sending, ``debt / rate`` (0 while the balance stays non-negative).
Taking first and waiting afterwards lets a request larger than the burst
through (a 1 MiB chunk through a 64 KiB bucket waits its share and goes),
and it queues concurrent senders fairly: each one sees the debt of those
before it and waits correspondingly longer. A rate of 0 means unlimited.
Time only ever moves forward for the bucket; an earlier ``now`` adds nothing.

:class:`RateLimiter` is the asyncio helper: ``await limiter.acquire(n)`` takes
from its bucket at the loop's clock and sleeps the delay; if the waiting task
is cancelled the tokens are given back so an abandoned transfer does not
slow the others. :class:`DaemonRateLimits` is the pair of limiters a daemon
shares between all its connections -- one for upload, one for download --
set from the board profile (``network.upload_rate``/``download_rate``) and
changeable at run time (``set_config``).

:class:`ThroughputMeter` measures what actually flowed (for the control
``status`` reply's ``upload_rate``/``download_rate``): an exponentially
decaying byte count with time constant ``tau``, whose steady-state value is
``rate * tau``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from csembed.board_profile import BoardProfile

__all__ = ["DaemonRateLimits", "RateLimiter", "ThroughputMeter", "TokenBucket", "default_burst"]

MIN_BURST: Final = 4096
"""Smallest default burst, in bytes."""


def _check_number(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return float(value)


def default_burst(rate: float) -> float:
    """The burst used when none is given: 1/8 s of traffic, at least 4 KiB."""
    return max(rate / 8, MIN_BURST)


class TokenBucket:
    """Token bucket with debt. See the module docstring.

    ``rate`` is tokens (bytes) per second, 0 for unlimited; ``burst`` the
    capacity (default :func:`default_burst`). The bucket starts full at the
    first ``take``.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self._rate = 0.0
        self._burst = 0.0
        self._fixed_burst = burst is not None
        self._tokens = 0.0
        self._last: float | None = None
        self._configure(rate, burst)
        self._tokens = self._burst

    def _configure(self, rate: float, burst: float | None) -> None:
        rate = _check_number(rate, "rate")
        if burst is None:
            burst = default_burst(rate)
        burst = _check_number(burst, "burst")
        if rate and burst <= 0:
            raise ValueError("burst must be positive when the rate is limited")
        self._rate, self._burst = rate, burst

    @property
    def rate(self) -> float:
        """Tokens per second; 0 means unlimited."""
        return self._rate

    @property
    def burst(self) -> float:
        """Capacity of the bucket."""
        return self._burst

    def tokens(self, now: float) -> float:
        """The balance at ``now`` (negative while in debt)."""
        self._refill(now)
        return self._tokens

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
            return
        if now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now

    def take(self, n: float, now: float) -> float:
        """Take ``n`` tokens at ``now``; return the seconds to wait before using them."""
        n = _check_number(n, "n")
        if not self._rate:
            return 0.0
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def refund(self, n: float, now: float) -> None:
        """Give back ``n`` tokens taken but not used (never above the burst)."""
        n = _check_number(n, "n")
        if self._rate:
            self._refill(now)
            self._tokens = min(self._burst, self._tokens + n)

    def set_rate(self, rate: float, now: float, burst: float | None = None) -> None:
        """Change the rate (and burst) from ``now`` on; tokens gained so far are kept."""
        self._refill(now)
        if burst is not None:
            self._fixed_burst = True
        self._configure(rate, burst if burst is not None else
                        (self._burst if self._fixed_burst else None))
        self._tokens = min(self._tokens, self._burst)


class ThroughputMeter:
    """Recent throughput in bytes per second, sans-I/O. See the module docstring."""

    def __init__(self, tau: float = 5.0) -> None:
        if not tau > 0:
            raise ValueError("tau must be positive")
        self.tau = tau
        self._value = 0.0
        self._last: float | None = None
        self.total = 0  #: bytes counted since creation

    def _decay(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._value *= math.exp(-(now - self._last) / self.tau)
        if self._last is None or now > self._last:
            self._last = now

    def add(self, n: int, now: float) -> None:
        """Count ``n`` bytes moved at ``now``."""
        self._decay(now)
        self._value += n
        self.total += n

    def rate(self, now: float) -> float:
        """Estimated bytes per second at ``now``."""
        self._decay(now)
        return self._value / self.tau


class RateLimiter:
    """``await acquire(n)`` before moving ``n`` bytes; shared by many tasks.

    ``clock`` defaults to the running loop's clock. ``meter`` counts what
    passed, for status reports.
    """

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] | None = None) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.meter = ThroughputMeter()
        self._clock = clock

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def rate(self) -> float:
        """Bytes per second allowed; 0 means unlimited."""
        return self.bucket.rate

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Change the limit at run time."""
        self.bucket.set_rate(rate, self._now(), burst)

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` bytes may be moved."""
        delay = self.bucket.take(n, self._now())
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.bucket.refund(n, self._now())
                raise
        self.meter.add(n, self._now())

    def throughput(self) -> float:
        """Recent bytes per second that passed this limiter."""
        return self.meter.rate(self._now())


@dataclass
class DaemonRateLimits:
    """The daemon-wide upload and download limiters every connection shares."""

    upload: RateLimiter
    download: RateLimiter

    @classmethod
    def from_rates(cls, upload_rate: float, download_rate: float) -> DaemonRateLimits:
        """Limiters for the given bytes-per-second rates (0 = unlimited)."""
        return cls(RateLimiter(upload_rate), RateLimiter(download_rate))

    @classmethod
    def from_board(cls, board: BoardProfile) -> DaemonRateLimits:
        """Limiters from a board profile's ``[network]`` table."""
        return cls.from_rates(board.network.upload_rate, board.network.download_rate)
