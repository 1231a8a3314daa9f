"""Sizes and durations as written in profiles and on the command line."""

from __future__ import annotations

import pytest

from csembed.units import format_rate, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), (4096, 4096), ("64 KiB", 65536), ("1 MB", 1_000_000), ("1MiB", 1 << 20),
     ("1.5 GiB", 3 << 29), ("2 kB", 2000), ("7 b", 7)],
)
def test_parse_size(text, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1", -1, "1 MX", "MiB", True, 1.5, "1 2 MiB"])
def test_parse_size_rejects(text) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90.0), (3, 3.0), ("250 ms", 0.25), ("2 min", 120.0), ("24 h", 86400.0),
     ("7d", 604800.0)],
)
def test_parse_duration(text, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "-5 s", "5 weeks", False, None])
def test_parse_duration_rejects(text) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_formatting() -> None:
    assert format_size(512) == "512 B"
    assert format_size(64 * 1024) == "64 KiB"
    assert format_size(3 << 29) == "1.5 GiB"
    assert format_rate(0) == "unlimited"
    assert format_rate(1_000_000) == "1 MB/s"
    assert format_rate(500) == "500 B/s"
