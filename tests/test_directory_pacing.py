"""Scan pacing (work/rest budget) and change debouncing, with fake clocks."""

from __future__ import annotations

import pytest

from csembed.directory.debounce import Debouncer
from csembed.directory.pacing import ScanBudget, next_scan_delay


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("last", "interval", "fraction", "delay"), [
    (1.0, 600.0, 0.1, 600.0),  # fast scan: the interval rules
    (120.0, 600.0, 0.1, 1080.0),  # slow scan: nine times its length of rest
    (10.0, 1.0, 0.5, 10.0),
    (0.0, 5.0, 1.0, 5.0),
])
def test_next_scan_delay(last: float, interval: float, fraction: float, delay: float) -> None:
    assert next_scan_delay(last, interval, fraction) == pytest.approx(delay)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError):
        next_scan_delay(1, 1, fraction)
    with pytest.raises(ValueError):
        ScanBudget(fraction, FakeClock())


def test_budget_keeps_work_under_fraction() -> None:
    clock = FakeClock()
    budget = ScanBudget(0.05, clock, slice_seconds=0.05)
    start = clock.now
    for work in (0.05, 0.2, 0.01, 0.07):
        deadline = budget.start_slice()
        assert deadline == pytest.approx(clock.now + 0.05)
        clock.now += work
        rest = budget.end_slice()
        assert rest == pytest.approx(work * 19)
        clock.now += rest
    elapsed = clock.now - start
    assert budget.work_seconds / elapsed == pytest.approx(0.05)
    with pytest.raises(RuntimeError):
        budget.end_slice()


def test_debounce_waits_for_quiet() -> None:
    debouncer = Debouncer(2.0)
    assert not debouncer.observe("/f", ("v1",), 100.0, changed_at=99.5)
    assert debouncer.due("/f") == 102.0
    assert not debouncer.observe("/f", ("v1",), 101.0)
    assert not debouncer.observe("/f", ("v2",), 101.5)  # changed again: wait longer
    assert not debouncer.observe("/f", ("v2",), 103.0)
    assert debouncer.next_due() == 103.5
    assert debouncer.observe("/f", ("v2",), 103.5)
    debouncer.forget("/f")
    assert "/f" not in debouncer and debouncer.next_due() is None


def test_debounce_old_change_settles_at_first_sight() -> None:
    debouncer = Debouncer(2.0)
    assert debouncer.observe("/old", ("v",), 100.0, changed_at=50.0)
    assert len(debouncer) == 0
    assert not debouncer.observe("/gone", ("missing",), 100.0)  # no change time: must wait
    assert Debouncer(0).observe("/x", ("v",), 1.0)
