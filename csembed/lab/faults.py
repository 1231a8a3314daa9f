"""What happens to each chunk crossing a faulty link: the fault proxy's sans-I/O core.

A link direction is modelled as a bottleneck followed by a delay line. A chunk
first waits for the bottleneck (a token bucket refilled at ``bandwidth`` bytes
per second), then travels for ``latency`` plus a uniform ``0..jitter`` extra.
On an ordered link (a TCP stream) a chunk never overtakes the one before it;
on an unordered one (UDP datagrams) jitter may reorder. Independently of
timing, a chunk may be lost (datagrams only), have one bit flipped, or end
its connection with a reset -- after a fixed byte count per connection or by
chance per chunk.

Every decision takes ``now`` and draws from an injected ``random.Random``, so
a seeded run makes the same choices for the same sequence of chunks. The
asyncio runtime (``fault_proxy``) owns the clock and the sockets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from csembed.protocol.jsonvalues import is_strict_int
from csembed.units import parse_duration, parse_size


@dataclass(frozen=True)
class Faults:
    """The faults a proxy applies; replace the whole value to change them at run time.

    Probabilities are in ``0..1``; ``0`` disables the fault. ``bandwidth`` is
    bytes per second in each direction (shared by all connections of a
    proxy); ``reset_after`` is a byte count per TCP connection, both
    directions together.
    """

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    bandwidth: int = 0
    reset_after: int = 0
    reset_probability: float = 0.0
    flip_probability: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency", "jitter"):
            if not 0.0 <= getattr(self, name) < 3600.0:
                raise ValueError(f"{name} must be between 0 and 3600 s, got {getattr(self, name)}")
        for name in ("loss", "reset_probability", "flip_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in 0..1, got {getattr(self, name)}")
        for name in ("bandwidth", "reset_after"):
            value = getattr(self, name)
            if not is_strict_int(value) or value < 0:
                raise ValueError(f"{name} must be a byte count >= 0, got {value!r}")


@dataclass(frozen=True)
class Fate:
    """What to do with one chunk: deliver ``data`` at ``deliver_at`` unless ``dropped``."""

    data: bytes
    deliver_at: float
    dropped: bool = False
    flipped: bool = False
    reset: bool = False  # reset the connection once ``data`` is delivered


class TokenBucket:
    """A bottleneck of ``rate`` bytes/s with a small burst; the debt may go negative.

    ``pass_time`` books ``size`` bytes and says when their last byte is through,
    so a reader may run ahead of the bottleneck and its writer just waits.
    """

    BURST_SECONDS = 0.02

    def __init__(self) -> None:
        self._tokens = 0.0
        self._last: float | None = None

    def pass_time(self, size: int, rate: int, now: float) -> float:
        if rate <= 0:
            self._last = None
            return now
        burst = max(1.0, rate * self.BURST_SECONDS)
        if self._last is None:
            self._tokens = burst
        else:
            self._tokens = min(burst, self._tokens + (now - self._last) * rate)
        self._last = now
        self._tokens -= size
        return now if self._tokens >= 0 else now + (-self._tokens) / rate


class LinkDirection:
    """Decides the fate of each chunk sent one way over one link (or one UDP flow)."""

    def __init__(self, rng: random.Random, bucket: TokenBucket, *, ordered: bool) -> None:
        self._rng = rng
        self._bucket = bucket
        self._ordered = ordered
        self._last_delivery = 0.0

    def decide(self, data: bytes, faults: Faults, now: float, *, sent: int = 0) -> Fate:
        """Fate of ``data``; ``sent`` is what the connection carried before it (for resets)."""
        if not self._ordered and faults.loss and self._rng.random() < faults.loss:
            return Fate(b"", now, dropped=True)
        reset = False
        if faults.reset_after and sent + len(data) >= faults.reset_after:
            data = data[: max(0, faults.reset_after - sent)]
            reset = True
        elif faults.reset_probability and self._rng.random() < faults.reset_probability:
            reset = True
        flipped = False
        if data and faults.flip_probability and self._rng.random() < faults.flip_probability:
            data = flip_bit(data, self._rng.randrange(len(data) * 8))
            flipped = True
        through = self._bucket.pass_time(len(data), faults.bandwidth, now)
        extra = self._rng.uniform(0.0, faults.jitter) if faults.jitter else 0.0
        deliver_at = through + faults.latency + extra
        if self._ordered:
            deliver_at = max(deliver_at, self._last_delivery)
            self._last_delivery = deliver_at
        return Fate(data, deliver_at, flipped=flipped, reset=reset)


def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit number ``bit`` (0 = lowest bit of the first byte) inverted."""
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def parse_probability(value: float | str) -> float:
    """A probability from ``0.02``, ``"0.02"`` or ``"2%"``."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(
                f"expected a probability such as '2%' or 0.02, got {value!r}") from None
    else:
        number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"a probability must lie in 0..1 (0%..100%), got {value!r}")
    return number


def parse_rate(value: int | str) -> int:
    """Bytes per second from ``"1 MB"``, ``"64KiB/s"`` or a plain integer."""
    if isinstance(value, str) and value.strip().lower().endswith("/s"):
        value = value.strip()[:-2]
    return parse_size(value)


_SETTERS = {
    "latency": parse_duration,
    "jitter": parse_duration,
    "loss": parse_probability,
    "bandwidth": parse_rate,
    "reset_after": parse_size,
    "reset_probability": parse_probability,
    "flip_probability": parse_probability,
}


def parse_setting(name: str, value: str) -> tuple[str, float | int]:
    """Turn ``("latency", "200ms")`` into ``("latency", 0.2)``; names may use ``-``."""
    key = name.strip().replace("-", "_")
    if key not in _SETTERS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(_SETTERS))}")
    return key, _SETTERS[key](value)
