"""Capped exponential back-off with jitter, sans-I/O (randomness passed in).

``Backoff.next_delay(u)`` returns the wait before the next reconnection
attempt, where ``u`` is a uniform random number in [0, 1) from the caller's
RNG: ``min(initial * factor**n, maximum)`` for the n-th consecutive failure,
scaled by a factor drawn from ``[1 - jitter, 1]`` so that many clients cut
off by the same outage do not all come back in the same second.
:meth:`Backoff.reset` after a connection that worked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays between reconnection attempts; see the module docstring."""

    initial: float = 1.0
    maximum: float = 300.0
    factor: float = 2.0
    jitter: float = 0.5
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("Backoff needs 0 < initial <= maximum")
        if self.factor < 1:
            raise ValueError("Backoff.factor must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("Backoff.jitter must be in [0, 1)")

    def next_delay(self, u: float) -> float:
        """The delay after one more failure; ``u`` uniform in [0, 1)."""
        exponent = min(self.failures, 64)
        self.failures += 1
        base = min(self.initial * self.factor**exponent, self.maximum)
        return base * (1 - self.jitter * u)

    def reset(self) -> None:
        """Forget past failures (after a successful connection)."""
        self.failures = 0
