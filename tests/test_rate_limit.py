"""Token bucket (fake time), the asyncio limiter, the throughput meter, and one real transfer."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csembed.board_profile import load_board
from csembed.runtime.rate_limit import (
    DaemonRateLimits,
    RateLimiter,
    ThroughputMeter,
    TokenBucket,
    default_burst,
)


def test_bucket_starts_full_then_charges_debt() -> None:
    bucket = TokenBucket(rate=1000, burst=500)
    assert bucket.take(500, now=10.0) == 0.0  # the whole burst at once
    assert bucket.take(100, now=10.0) == pytest.approx(0.1)  # 100 in debt at 1000/s
    assert bucket.take(100, now=10.0) == pytest.approx(0.2)  # queued behind the first
    assert bucket.tokens(10.2) == pytest.approx(0.0)
    assert bucket.take(50, now=10.25) == 0.0


def test_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=50)
    bucket.take(50, 0.0)
    assert bucket.tokens(1000.0) == 50
    assert bucket.take(60, 1000.0) == pytest.approx(0.1)


def test_a_request_bigger_than_the_burst_waits_its_share() -> None:
    bucket = TokenBucket(rate=1 << 20, burst=64 << 10)
    delay = bucket.take(1 << 20, 0.0)
    assert delay == pytest.approx(((1 << 20) - (64 << 10)) / (1 << 20))


def test_zero_rate_is_unlimited() -> None:
    bucket = TokenBucket(rate=0)
    assert all(bucket.take(10**12, t) == 0.0 for t in (0.0, 0.0, 1.0))


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=100, burst=100)
    bucket.take(100, 5.0)
    assert bucket.tokens(4.0) == 0.0
    assert bucket.tokens(5.5) == pytest.approx(50.0)


@pytest.mark.parametrize("rate, burst", [(-1, None), (math.nan, None), (math.inf, None),
                                         (True, None), (100, -5), (100, 0), ("100", None)])
def test_bad_parameters_are_refused(rate: object, burst: object) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)  # type: ignore[arg-type]


def test_refund_and_rate_change() -> None:
    bucket = TokenBucket(rate=100, burst=100)
    bucket.take(150, 0.0)
    bucket.refund(150, 0.0)
    assert bucket.tokens(0.0) == 100
    bucket.set_rate(1000, 0.0)
    assert bucket.burst == 100  # an explicit burst is kept
    bucket.take(200, 0.0)
    assert bucket.tokens(0.1) == pytest.approx(0.0)
    auto = TokenBucket(rate=80_000)
    assert auto.burst == default_burst(80_000) == 10_000
    auto.set_rate(800_000, 0.0)
    assert auto.burst == 100_000
    assert default_burst(0) == 4096


@given(st.floats(1, 1e7), st.floats(1, 1e6),
       st.lists(st.tuples(st.floats(0, 10), st.integers(0, 10**6)), max_size=50))
def test_long_run_throughput_never_exceeds_burst_plus_rate_times_time(
        rate: float, burst: float, steps: list[tuple[float, int]]) -> None:
    bucket = TokenBucket(rate, burst)
    now = 0.0
    sent = 0
    for gap, size in steps:
        now += gap
        delay = bucket.take(size, now)
        now += delay  # an obedient sender waits before sending
        sent += size
        assert sent <= burst + rate * now + 1e-6 * max(1.0, sent)


def test_meter_follows_a_steady_stream() -> None:
    meter = ThroughputMeter(tau=2.0)
    for i in range(1, 401):  # 10 kB every 0.1 s = 100 kB/s for 40 s
        meter.add(10_000, i * 0.1)
    assert meter.rate(40.0) == pytest.approx(100_000, rel=0.06)
    assert meter.rate(60.0) < 1_000  # and decays once it stops
    assert meter.total == 4_000_000


def test_limiter_with_an_injected_clock() -> None:
    clock = [0.0]
    limiter = RateLimiter(1000, 100, clock=lambda: clock[0])

    async def main() -> None:
        await limiter.acquire(100)  # within the burst: no wait
        start = asyncio.get_running_loop().time()
        clock[0] = 0.0
        await limiter.acquire(10)  # 10 tokens of debt: 0.01 s at 1000/s
        assert asyncio.get_running_loop().time() - start >= 0.009

    asyncio.run(main())
    assert limiter.bucket.tokens(0.01) == pytest.approx(0.0, abs=1e-9)


def test_cancelled_waiter_gives_its_tokens_back() -> None:
    async def main() -> None:
        limiter = RateLimiter(100, 100)
        await limiter.acquire(100)
        waiter = asyncio.create_task(limiter.acquire(1000))  # ~10 s of debt
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        now = asyncio.get_running_loop().time()
        assert limiter.bucket.tokens(now) > -10  # the 1000 came back

    asyncio.run(main())


def test_daemon_limits_come_from_the_board() -> None:
    board = load_board("wifi-piano")
    limits = DaemonRateLimits.from_board(board)
    assert limits.upload.rate == board.network.upload_rate
    assert limits.download.rate == board.network.download_rate
    unlimited = DaemonRateLimits.from_board(load_board("desktop"))
    assert unlimited.upload.rate == 0 == unlimited.download.rate


def test_two_megabytes_through_a_one_megabyte_per_second_limiter_over_loopback() -> None:
    total, chunk, rate = 2 << 20, 64 << 10, 1 << 20

    async def main() -> float:
        limits = DaemonRateLimits.from_rates(upload_rate=rate, download_rate=0)
        received = 0
        done = asyncio.Event()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            while data := await reader.read(1 << 16):
                received += len(data)
            done.set()
            writer.close()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes(chunk)
        start = time.monotonic()
        for _ in range(total // chunk):
            await limits.upload.acquire(chunk)
            writer.write(payload)
            await writer.drain()
        writer.close()
        await asyncio.wait_for(done.wait(), 30)
        elapsed = time.monotonic() - start
        server.close()
        await server.wait_closed()
        assert received == total
        assert limits.upload.throughput() > 0
        return elapsed

    elapsed = asyncio.run(main())
    # The burst (1/8 s) goes at once, the rest at 1 MiB/s: about 1.875 s.
    assert elapsed >= 1.8
