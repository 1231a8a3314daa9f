"""Timing shared by the benchmarks in this folder.

Each benchmark times our code and its anchor with the same function, so both
figures come from the same clock and the same best-of rule. Imported as
``_timing`` (the scripts run as ``python tools/bench/<name>.py``, which puts
this folder on ``sys.path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int = 1) -> float:
    """Fewest wall-clock seconds one call of ``fn`` took over ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
