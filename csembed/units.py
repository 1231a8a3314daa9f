"""Human-readable sizes and durations, as written in board profiles and on the CLI.

Sizes are byte counts: a bare integer, or a number with a unit. Decimal units
(``kB``/``KB``, ``MB``, ``GB``, ``TB``) are powers of 1000 and binary units
(``KiB``, ``MiB``, ``GiB``, ``TiB``) powers of 1024, so a network rate of
``"1 MB"`` per second means 1,000,000 bytes, as link speeds are quoted.
Durations are seconds: a bare number or a number with ``ms``, ``s``, ``min``,
``h`` or ``d``. Anything else is a ``ValueError`` saying what was expected.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_DURATION_UNITS = {
    "": 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0,
    "h": 3600.0, "d": 86400.0,
}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Return the byte count of ``value`` (an int, or e.g. ``"64 KiB"``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 64 KiB, got {value!r}")
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as '64 KiB' or '1 MB', got {value!r}")
    number = float(match.group(1)) if "." in match.group(1) else int(match.group(1))
    return int(number * _SIZE_UNITS[unit])


def parse_duration(value: int | float | str) -> float:
    """Return the seconds in ``value`` (a number, or e.g. ``"24 h"``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '60 s', got {value!r}")
    match = _NUMBER_UNIT.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as '90 s', '5 min' or '24 h', got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[unit]


def format_size(count: int) -> str:
    """Format a byte count compactly with binary units (``"1.5 MiB"``)."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.4g} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: int) -> str:
    """Format a rate limit in decimal units, as link speeds are quoted; 0 = none."""
    if bytes_per_second == 0:
        return "unlimited"
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if bytes_per_second >= scale:
            return f"{bytes_per_second / scale:.4g} {unit}/s"
    return f"{bytes_per_second} B/s"
