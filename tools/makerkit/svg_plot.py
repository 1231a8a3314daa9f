"""A two-panel SVG line chart (throughput and RSS over time), written by hand.

Theory of operation. No plotting library: the chart is a few dozen SVG
elements. Each :class:`Series` is drawn as a polyline in its own panel, with
its y axis from 0 to a rounded-up maximum and five labelled grid lines; the
shared x axis is seconds. Spans (the scenarios) are shaded bands with their
names, so a dip in throughput can be matched to "power cut" or "link drop".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, PANEL, MARGIN_L, MARGIN_R, MARGIN_T, GAP = 760, 180, 64, 16, 28, 36


@dataclass(frozen=True)
class Series:
    """One panel's line: ``(t, value)`` points, a title and a unit."""

    title: str
    unit: str
    points: tuple[tuple[float, float], ...]
    colour: str = "#1f5fa8"
    limit: float | None = None  #: a horizontal dashed line (e.g. the RAM budget)


def _nice(value: float) -> float:
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def render(series: list[Series], spans: list[tuple[str, float, float]], title: str) -> str:
    """The chart as SVG text."""
    t_end = max([t for s in series for t, _ in s.points] + [e for _, _, e in spans] + [1.0])
    height = MARGIN_T + len(series) * (PANEL + GAP) + 10
    plot_w = WIDTH - MARGIN_L - MARGIN_R

    def x(t: float) -> float:
        return MARGIN_L + plot_w * t / t_end

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{MARGIN_L}" y="16" font-size="13" font-weight="bold">{escape(title)}'
           '</text>']
    for index, s in enumerate(series):
        top = MARGIN_T + index * (PANEL + GAP) + 14
        peak = max([v for _, v in s.points] + [s.limit or 0.0])
        y_max = _nice(peak * 1.05)

        def y(v: float, top: float = top, y_max: float = y_max) -> float:
            return top + PANEL - PANEL * v / y_max

        for name, start, end in spans:
            width = max(1.0, x(end) - x(start))
            out.append(f'<rect x="{x(start):.1f}" y="{top}" width="{width:.1f}" '
                       f'height="{PANEL}" fill="#eef2f7"/>')
            if index == 0:
                out.append(f'<text x="{x(start) + 2:.1f}" y="{top + 11}" fill="#555">'
                           f'{escape(name)}</text>')
        for k in range(6):
            v = y_max * k / 5
            out.append(f'<line x1="{MARGIN_L}" x2="{WIDTH - MARGIN_R}" y1="{y(v):.1f}" '
                       f'y2="{y(v):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{MARGIN_L - 4}" y="{y(v) + 4:.1f}" text-anchor="end">'
                       f'{v:g}</text>')
        out.append(f'<text x="{MARGIN_L}" y="{top - 4}">{escape(s.title)} ({escape(s.unit)})'
                   '</text>')
        if s.limit is not None:
            out.append(f'<line x1="{MARGIN_L}" x2="{WIDTH - MARGIN_R}" y1="{y(s.limit):.1f}" '
                       f'y2="{y(s.limit):.1f}" stroke="#c33" stroke-dasharray="6 4"/>')
        if s.points:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s.points)
            out.append(f'<polyline fill="none" stroke="{s.colour}" stroke-width="1.5" '
                       f'points="{path}"/>')
        axis_y = top + PANEL
        out.append(f'<line x1="{MARGIN_L}" x2="{WIDTH - MARGIN_R}" y1="{axis_y}" y2="{axis_y}"'
                   ' stroke="#333"/>')
        for k in range(6):
            t = t_end * k / 5
            out.append(f'<text x="{x(t):.1f}" y="{axis_y + 13}" text-anchor="middle">'
                       f'{t:.0f} s</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
