"""Keeping scans to a fraction of wall time (board profile ``cpu.scan_budget``).

Theory of operation
-------------------
Two rules, both from directory.md "Computer Resources":

* **Within a scan**, hashing runs in slices. :class:`ScanBudget` measures the
  work done (with an injected clock) and says how long to rest so that
  work / (work + rest) stays at or under the budget fraction. Rest owed by
  one slice is carried to the next, so slices of any length average out.
* **Only background work is paced.** The budget is for walking trees that
  have not changed. Hashing content that is new or changed, a scan the user
  asked for (``rescan``) and one triggered by a change notification run at
  full speed: such a slice is ended with ``end_slice(full_speed=True)``,
  counted in :attr:`ScanBudget.full_speed_seconds`, and owes no rest
  (:func:`slice_is_urgent` is the rule). Syncing what changed must not wait
  behind a budget meant to keep idle CPU low.
* **Between scans**, :func:`next_scan_delay` waits the configured interval,
  or longer when the last scan was slow: a scan that took ``d`` seconds is
  followed by at least ``d * (1 - f) / f`` seconds of rest, which is the
  draft's "ten times the time it took" at ``f = 10 %``.

Nothing here sleeps; the caller (the runtime's scheduler) rests for the
returned durations, which keeps it testable with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable


def _check_fraction(fraction: float) -> float:
    if not 0 < fraction <= 1:
        raise ValueError(f"a scan budget is a fraction above 0 and at most 1, got {fraction}")
    return float(fraction)


def next_scan_delay(last_scan_seconds: float, interval: float, fraction: float) -> float:
    """Seconds from the end of one scan to the start of the next."""
    fraction = _check_fraction(fraction)
    owed = max(0.0, last_scan_seconds) * (1 - fraction) / fraction
    return max(interval, owed)


def slice_is_urgent(*, requested: bool, hashed_bytes: int) -> bool:
    """Whether a scan slice runs at full speed: the scan was asked for (rescan,
    change notification) or the slice hashed new or changed content."""
    return requested or hashed_bytes > 0


class ScanBudget:
    """Work/rest accounting for paced scanning.

    Use::

        budget = ScanBudget(0.1, clock=time.monotonic)
        while not done:
            deadline = budget.start_slice()
            done = scan_pass.step(until=deadline, clock=time.monotonic)
            rest = budget.end_slice()
            sleep(rest)      # the runtime's job
    """

    def __init__(self, fraction: float, clock: Callable[[], float],
                 slice_seconds: float = 0.05) -> None:
        self.fraction = _check_fraction(fraction)
        if slice_seconds <= 0:
            raise ValueError(f"slice_seconds must be positive, got {slice_seconds}")
        self.slice_seconds = slice_seconds
        self._clock = clock
        self._started: float | None = None
        self._debt = 0.0
        self.work_seconds = 0.0  #: total work measured so far
        self.rest_seconds = 0.0  #: total rest handed out so far
        self.full_speed_seconds = 0.0  #: work done in urgent slices, owing no rest

    def start_slice(self) -> float:
        """Begin a work slice; returns the clock time by which it should end."""
        self._started = self._clock()
        return self._started + self.slice_seconds

    def end_slice(self, *, full_speed: bool = False) -> float:
        """End the slice; returns the seconds to rest before the next one.

        ``full_speed`` slices (see :func:`slice_is_urgent`) owe no rest.
        """
        if self._started is None:
            raise RuntimeError("end_slice() without start_slice()")
        worked = max(0.0, self._clock() - self._started)
        self._started = None
        self.work_seconds += worked
        if full_speed:
            self.full_speed_seconds += worked
            return 0.0
        self._debt += worked * (1 - self.fraction) / self.fraction
        rest, self._debt = self._debt, 0.0
        self.rest_seconds += rest
        return rest
