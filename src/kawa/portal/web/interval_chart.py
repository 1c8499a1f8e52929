"""Geometry of the experiments page's interval chart: per challenger, the always-valid interval over looks (the
estimate as a line, the lower/upper bounds as a band) against the zero line, which is the decision boundary —
the experiment stops for a challenger once its band leaves zero on one side; and of the sample-ratio chart (the
always-valid SRM p-value over looks against its hard gate).

Pure: looks in (as the API returns them), pixel coordinates out, for the template to draw as server-rendered SVG
(the portal's CSP forbids inline script, so the chart is drawn on the server). An unbounded interval (the first
looks, before two units per arm matured) is clipped to the chart's edge and marked ``clipped``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kawa.portal.api.experiments import LookOut

WIDTH, HEIGHT = 620, 220
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 12, 34


@dataclass(frozen=True)
class ChartPoint:
    look: int
    units: int
    x: float
    y: float
    y_lower: float
    y_upper: float
    estimate: float | None
    lower: float | None
    upper: float | None
    p_value: float | None
    clipped: bool


@dataclass(frozen=True)
class IntervalChart:
    arm: str
    control: str
    width: int
    height: int
    points: tuple[ChartPoint, ...]
    band: str  # an SVG path: the upper bounds left to right, then the lower bounds back
    line: str  # SVG polyline points of the estimate
    zero_y: float
    left: int
    right: float
    ticks: tuple[tuple[float, str], ...]  # (y, label) on the value axis
    x_labels: tuple[tuple[float, str], ...]  # (x, label) under the first and last look


def interval_charts(looks: Sequence[LookOut], control: str, challengers: Sequence[str]) -> list[IntervalChart]:
    """One chart per challenger, with one point per look (looks without that challenger are skipped)."""
    return [_chart(looks, control, arm) for arm in challengers]


def _chart(looks: Sequence[LookOut], control: str, arm: str) -> IntervalChart:
    rows = []
    for lk in looks:
        for c in lk.comparisons:
            if c.arm == arm:
                rows.append((lk, c))
    finite = [v for _, c in rows for v in (c.estimate, c.lower, c.upper) if v is not None]
    lo, hi = min([0.0, *finite]), max([0.0, *finite])
    if hi - lo < 1e-12:
        lo, hi = -1.0, 1.0
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(v: float) -> float:
        return round(TOP + (hi - v) / (hi - lo) * plot_h, 2)

    def x_of(i: int) -> float:
        return round(LEFT + (plot_w / 2 if len(rows) == 1 else i * plot_w / (len(rows) - 1)), 2)

    points = []
    for i, (lk, c) in enumerate(rows):
        est = c.estimate if c.estimate is not None else 0.0
        points.append(ChartPoint(
            look=lk.index, units=sum(lk.n.values()), x=x_of(i), y=y_of(est),
            y_lower=y_of(c.lower) if c.lower is not None else float(TOP + plot_h),
            y_upper=y_of(c.upper) if c.upper is not None else float(TOP),
            estimate=c.estimate, lower=c.lower, upper=c.upper, p_value=c.p_value,
            clipped=c.lower is None or c.upper is None,
        ))  # fmt: skip
    return IntervalChart(arm, control, WIDTH, HEIGHT, tuple(points), _band(points), _line(points), y_of(0.0), LEFT,
                         WIDTH - RIGHT, _ticks(lo, hi, y_of), _x_labels(points))  # fmt: skip


def _band(points: Sequence[ChartPoint]) -> str:
    if not points:
        return ""
    if len(points) == 1:  # one look: a narrow box, so the band is visible
        p = points[0]
        return (f"M{p.x - 6:.2f},{p.y_upper:.2f} L{p.x + 6:.2f},{p.y_upper:.2f} L{p.x + 6:.2f},{p.y_lower:.2f} "
                f"L{p.x - 6:.2f},{p.y_lower:.2f} Z")
    upper = [f"{p.x:.2f},{p.y_upper:.2f}" for p in points]
    lower = [f"{p.x:.2f},{p.y_lower:.2f}" for p in reversed(points)]
    return "M" + " L".join(upper + lower) + " Z"


def _line(points: Sequence[ChartPoint]) -> str:
    return " ".join(f"{p.x:.2f},{p.y:.2f}" for p in points)


def _ticks(lo: float, hi: float, y_of: Callable[[float], float]) -> tuple[tuple[float, str], ...]:
    values = [lo + (hi - lo) * k / 4 for k in range(5)]
    return tuple((y_of(v), f"{v:+.3g}") for v in values)


def _x_labels(points: Sequence[ChartPoint]) -> tuple[tuple[float, str], ...]:
    if not points:
        return ()
    first, last = points[0], points[-1]
    labels = [(first.x, f"look {first.look} · {first.units} units")]
    if last is not first:
        labels.append((last.x, f"look {last.look} · {last.units} units"))
    return tuple(labels)


@dataclass(frozen=True)
class SrmChart:
    """The always-valid SRM p-value over looks on a -log10 scale, with the hard gate ``srm_alpha`` as a line:
    a point above the line is a sample-ratio mismatch."""

    width: int
    height: int
    points: tuple[tuple[float, float, int, float], ...]  # (x, y, look, p)
    line: str
    gate_y: float
    left: int
    right: float
    ticks: tuple[tuple[float, str], ...]


SRM_HEIGHT = 120


def srm_chart(looks: Sequence[LookOut], srm_alpha: float) -> SrmChart:
    rows = [(lk.index, lk.srm_p_value) for lk in looks if lk.srm_p_value is not None]
    gate = -math.log10(srm_alpha)
    values = [-math.log10(max(p, 1e-300)) for _, p in rows]
    top = max([gate * 1.5, *values])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, SRM_HEIGHT - TOP - BOTTOM

    def y_of(v: float) -> float:
        return round(TOP + (1 - v / top) * plot_h, 2)

    def x_of(i: int) -> float:
        return round(LEFT + (plot_w / 2 if len(rows) == 1 else i * plot_w / (len(rows) - 1)), 2)

    points = tuple((x_of(i), y_of(v), look, p) for i, ((look, p), v) in enumerate(zip(rows, values, strict=True)))
    ticks = tuple((y_of(v), f"p = {10 ** -v:.2g}") for v in (0.0, gate))
    return SrmChart(WIDTH, SRM_HEIGHT, points, " ".join(f"{x:.2f},{y:.2f}" for x, y, _, _ in points), y_of(gate),
                    LEFT, WIDTH - RIGHT, ticks)  # fmt: skip
