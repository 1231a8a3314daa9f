"""Back-off of failed authentications: the schedule, and the server obeying it."""

from __future__ import annotations

import pytest
from test_core_support import DeterministicRng, FakeClock, drain

from csembed.security.handshake import SecureSession, SessionFailed, State
from csembed.security.rate_limit import (
    ID_SCHEDULE,
    SOURCE_SCHEDULE,
    BackoffSchedule,
    RateLimiter,
)

ID = "c0" * 32
OTHER_ID = "d1" * 32
PASSWORD = b"12345678"


def test_documented_schedule() -> None:
    delays = [SOURCE_SCHEDULE.delay(n) for n in range(20)]
    assert delays[:3] == [0, 0, 0]
    assert delays[3:12] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert delays[12:] == [300] * 8
    assert sum(delays) == 2911
    assert [ID_SCHEDULE.delay(n) for n in (31, 32, 33, 38, 100)] == [0, 1, 2, 60, 60]
    with pytest.raises(ValueError):
        BackoffSchedule(base_delay=0)


def attempt(limiter: RateLimiter, clock: FakeClock, source: str, id_hex: str = ID,
            password: bytes = b"wrong!!!") -> tuple[float, bool]:
    """One full attempt; returns (seconds the server held its answer, succeeded)."""
    rng = DeterministicRng(f"{source} {clock.now}")
    client = SecureSession.client(id_hex, password, clock=clock, rng=rng)
    server = SecureSession.server(lambda i: PASSWORD if i in (ID, OTHER_ID) else None,
                                  clock=clock, rng=rng, limiter=limiter, source=source)
    server.receive_data(client.data_to_send())
    assert drain(server) == []
    started = clock.now
    while server.state is State.HOLDING:
        assert server.data_to_send() == b""  # nothing that could test a guess
        timer = server.get_timer()
        assert timer is not None and timer > clock.now
        clock.now = timer
        server.handle_timer(clock.now)
    held = clock.now - started
    client.receive_data(server.data_to_send())
    client_events = drain(client)
    finish = client.data_to_send()
    if finish:
        server.receive_data(finish)
        drain(server)
    ok = server.state is State.OPEN
    if not ok:
        assert isinstance(client_events[0], SessionFailed)
        server.receive_data(b"")  # the failing client hangs up
        assert isinstance(drain(server)[-1], SessionFailed)
    return held, ok


def test_twenty_wrong_attempts_take_the_documented_back_off() -> None:
    limiter = RateLimiter()
    clock = FakeClock()
    start = clock.now
    held = [attempt(limiter, clock, "198.51.100.7")[0] for _ in range(20)]
    assert held == [SOURCE_SCHEDULE.delay(n) for n in range(20)]
    assert clock.now - start >= 2911
    assert limiter.failures("198.51.100.7", ID, clock.now) == (20, 20)
    # another address is answered at once, on another ID and on the same one
    assert attempt(limiter, clock, "203.0.113.9", OTHER_ID)[0] == 0
    assert attempt(limiter, clock, "203.0.113.10", ID)[0] == 0


def test_success_clears_the_counts() -> None:
    limiter = RateLimiter()
    clock = FakeClock()
    for _ in range(5):
        attempt(limiter, clock, "192.0.2.1")
    held, ok = attempt(limiter, clock, "192.0.2.1", password=PASSWORD)
    assert ok and held == SOURCE_SCHEDULE.delay(5)
    assert limiter.failures("192.0.2.1", ID, clock.now) == (0, 0)
    assert attempt(limiter, clock, "192.0.2.1")[0] == 0


def test_parallel_attempts_do_not_share_a_free_slot() -> None:
    limiter = RateLimiter()
    clock = FakeClock()
    servers = []
    for i in range(5):
        client = SecureSession.client(ID, b"guess%03d" % i, clock=clock,
                                      rng=DeterministicRng(f"p{i}"))
        server = SecureSession.server(lambda _: PASSWORD, clock=clock,
                                      rng=DeterministicRng(f"s{i}"), limiter=limiter,
                                      source="192.0.2.50")
        server.receive_data(client.data_to_send())
        drain(server)
        servers.append(server)
    answered = [s.state is State.HANDSHAKE for s in servers]
    assert answered == [True, True, True, False, False]
    clock.advance(1)
    for s in servers[3:]:
        s.handle_timer(clock.now)
    assert [s.state is State.HANDSHAKE for s in servers[3:]] == [True, False]
    assert servers[4].get_timer() == clock.now + 2


def test_counts_are_forgotten_and_the_table_is_bounded() -> None:
    limiter = RateLimiter(max_entries=3)
    for _ in range(10):
        limiter.record_failure("a", ID, 0.0)
    assert limiter.check("a", ID, 1.0) > 0
    assert limiter.check("a", ID, 0.0 + SOURCE_SCHEDULE.forget_after) == 0
    for n in range(10):
        limiter.record_failure(f"addr{n}", f"{n:064x}", 10.0)
    assert limiter.failures("addr0", f"{0:064x}", 10.0) == (0, 0)  # evicted, oldest first
    assert limiter.failures("addr9", f"{9:064x}", 10.0) == (1, 1)


def test_per_id_limit_bounds_a_distributed_attack() -> None:
    limiter = RateLimiter()
    clock = FakeClock()
    for n in range(32):
        assert attempt(limiter, clock, f"10.0.{n}.1")[0] == 0
    assert attempt(limiter, clock, "10.0.99.1")[0] == ID_SCHEDULE.delay(32)
