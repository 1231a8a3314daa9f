"""Back-off of failed authentications: the schedule, and the server obeying it."""

from __future__ import annotations

import pytest
from test_core_support import DeterministicRng, FakeClock, drain

from csembed.security.handshake import SecureSession, SessionConfig, SessionFailed, State
from csembed.security.rate_limit import (
    ID_BUDGET,
    SOURCE_SCHEDULE,
    BackoffSchedule,
    GuessBudget,
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
    assert (ID_BUDGET.burst, ID_BUDGET.rate, ID_BUDGET.reserve) == (64, 4.0, 16)
    with pytest.raises(ValueError):
        BackoffSchedule(base_delay=0)
    with pytest.raises(ValueError):
        GuessBudget(reserve=64)


NO_HOLD_LIMIT = SessionConfig(hold_limit=1e9)


def attempt(limiter: RateLimiter, clock: FakeClock, source: str, id_hex: str = ID,
            password: bytes = b"wrong!!!", config: SessionConfig = NO_HOLD_LIMIT,
            ) -> tuple[float, bool]:
    """One full attempt; returns (seconds the server held its answer, succeeded)."""
    rng = DeterministicRng(f"{source} {clock.now}")
    client = SecureSession.client(id_hex, password, now=clock.now, rng=rng)
    server = SecureSession.server(lambda i, now: PASSWORD if i in (ID, OTHER_ID) else None,
                                  now=clock.now, rng=rng, limiter=limiter, source=source,
                                  config=config)
    server.receive_data(client.data_to_send(), clock.now)
    assert drain(server) == []
    started = clock.now
    while server.state is State.HOLDING:
        assert server.data_to_send() == b""  # nothing that could test a guess
        timer = server.get_timer()
        assert timer is not None and timer > clock.now
        clock.now = timer
        server.handle_timer(clock.now)
    held = clock.now - started
    client.receive_data(server.data_to_send(), clock.now)
    client_events = drain(client)
    finish = client.data_to_send()
    if finish:
        server.receive_data(finish, clock.now)
        drain(server)
    ok = server.state is State.OPEN
    if not ok:
        assert isinstance(client_events[0], SessionFailed)
        server.receive_data(b"", clock.now)  # the failing client hangs up
        assert isinstance(drain(server)[-1], SessionFailed)
    return held, ok


def test_twenty_wrong_attempts_take_the_documented_back_off() -> None:
    limiter = RateLimiter()
    clock = FakeClock()
    start = clock.now
    held = [attempt(limiter, clock, "198.51.100.7")[0] for _ in range(20)]
    assert held == [SOURCE_SCHEDULE.delay(n) for n in range(20)]
    assert clock.now - start >= 2911
    assert limiter.failures("198.51.100.7", ID, clock.now)[0] == 20
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
    assert limiter.failures("192.0.2.1", ID, clock.now)[0] == 0
    assert attempt(limiter, clock, "192.0.2.1")[0] == 0


def test_parallel_attempts_do_not_share_a_free_slot() -> None:
    limiter = RateLimiter()
    clock = FakeClock()
    servers = []
    for i in range(5):
        client = SecureSession.client(ID, b"guess%03d" % i, now=clock.now,
                                      rng=DeterministicRng(f"p{i}"))
        server = SecureSession.server(lambda _, now: PASSWORD, now=clock.now,
                                      rng=DeterministicRng(f"s{i}"), limiter=limiter,
                                      source="192.0.2.50")
        server.receive_data(client.data_to_send(), clock.now)
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
    for n in range(ID_BUDGET.burst):
        assert attempt(limiter, clock, f"10.0.{n}.1")[0] == 0
    assert attempt(limiter, clock, "10.0.99.1")[0] == 1 / ID_BUDGET.rate


def test_guessers_from_many_addresses_cannot_lock_out_a_newcomer() -> None:
    """Issue 10 item 4: 60 addresses guessing an access ID over and over; the
    holder of the right code, from an address with a clean record, is still
    answered within 1 / rate seconds and gets in."""
    limiter = RateLimiter()
    clock = FakeClock()
    attackers = [f"127.0.0.{n}" for n in range(2, 62)]
    for _ in range(6):
        for source in attackers:
            attempt(limiter, clock, source)
    held, ok = attempt(limiter, clock, "127.0.0.1", password=PASSWORD)
    assert ok and held <= 1 / ID_BUDGET.rate
    # and their 360 guesses took at least (360 - burst) / rate seconds
    assert clock.now >= (360 - ID_BUDGET.burst) / ID_BUDGET.rate


def test_a_held_hello_times_out_unanswered() -> None:
    """A hello the limiter would hold for longer than the session's ``hold_limit``
    is closed at once, unanswered and uncounted; a shorter hold ends in an answer."""
    limiter = RateLimiter()
    clock = FakeClock()
    for _ in range(6):  # the 7th attempt would be held 8 s, the 8th 16 s
        attempt(limiter, clock, "192.0.2.9")
    config = SessionConfig(hold_limit=10.0)
    assert attempt(limiter, clock, "192.0.2.9", config=config)[0] == 8
    client = SecureSession.client(ID, b"guess", now=clock.now, rng=DeterministicRng("c"))
    server = SecureSession.server(lambda *_: PASSWORD, now=clock.now, rng=DeterministicRng("s"),
                                  limiter=limiter, source="192.0.2.9", config=config)
    server.receive_data(client.data_to_send(), clock.now)
    events = drain(server)
    assert len(events) == 1 and isinstance(events[0], SessionFailed)
    assert "rate limited" in events[0].reason
    assert server.data_to_send() == b""
    assert limiter.failures("192.0.2.9", ID, clock.now)[0] == 7


def test_data_sent_before_the_server_hello_is_refused() -> None:
    """While its hello is held the client has nothing valid to send; extra bytes
    end the session instead of piling up unauthenticated in memory."""
    limiter = RateLimiter()
    clock = FakeClock()
    for _ in range(4):
        attempt(limiter, clock, "192.0.2.10")
    client = SecureSession.client(ID, b"guess", now=clock.now, rng=DeterministicRng("c2"))
    server = SecureSession.server(lambda *_: PASSWORD, now=clock.now, rng=DeterministicRng("s2"),
                                  limiter=limiter, source="192.0.2.10")
    server.receive_data(client.data_to_send(), clock.now)
    assert drain(server) == [] and server.state is State.HOLDING
    server.receive_data(b"x" * 4096, clock.now)
    events = drain(server)
    assert len(events) == 1 and isinstance(events[0], SessionFailed)
    assert "before the server hello" in events[0].reason
