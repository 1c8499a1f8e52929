"""Geometry of the monitoring page's server-drawn SVG charts (pure): the feature-by-window drift heat map, the
live score distribution against the reference, and matured performance over time with its interval band."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SCORE = "<score>"  # kawa.monitor.calibrate.SCORE: the drift table's row of the model's score

# PSI's customary reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a real shift.
PSI_LEVELS = (0.1, 0.25)
CELL_W, CELL_H, LABEL_W = 18, 18, 130


def level(psi: float | None) -> str:
    if psi is None:
        return "none"
    return "ok" if psi < PSI_LEVELS[0] else "warn" if psi < PSI_LEVELS[1] else "bad"


def heatmap(windows: Sequence[Any], features: Sequence[str]) -> dict[str, Any]:
    """One row per feature, one column per window (oldest left), coloured by the window's PSI for the feature."""
    cells = []
    for col, w in enumerate(windows):
        drift = w.data.get("drift", {})
        for row, name in enumerate(features):
            psi = (drift.get(name) or {}).get("psi")
            cells.append({"x": LABEL_W + col * CELL_W, "y": row * CELL_H, "w": CELL_W - 2, "h": CELL_H - 2,
                          "feature": name, "window": col, "psi": psi, "level": level(psi),
                          "start": w.data.get("window", {}).get("start")})  # fmt: skip
    labels = [{"y": row * CELL_H + CELL_H - 5, "text": name} for row, name in enumerate(features)]
    return {"cells": cells, "labels": labels, "width": LABEL_W + max(1, len(windows)) * CELL_W + 10,
            "height": max(1, len(features)) * CELL_H + 4, "columns": len(windows)}  # fmt: skip


def score_bars(window: Any | None, width: float = 360.0, height: float = 120.0) -> dict[str, Any] | None:
    """The last window's score counts per reference bin next to the reference's share (each bin holds about
    1/B of the reference by construction: its cut points are the reference quantiles)."""
    if window is None:
        return None
    row = window.data.get("drift", {}).get(SCORE)
    if not row or not row.get("counts"):
        return None
    counts = [float(c) for c in row["counts"]]
    total = sum(counts) or 1.0
    shares = [c / total for c in counts]
    reference = 1.0 / len(counts)
    top = max([*shares, reference]) or 1.0
    bw = width / len(counts)
    bars = [{"x": i * bw + 2, "w": bw - 4, "h": s / top * height, "y": height - s / top * height, "share": s}
            for i, s in enumerate(shares)]  # fmt: skip
    return {"bars": bars, "reference_y": height - reference / top * height, "reference": reference, "width": width,
            "height": height, "psi": row.get("psi")}  # fmt: skip


def performance_series(events: Sequence[Any], metric: str = "auroc", width: float = 420.0,
                       height: float = 140.0) -> list[dict[str, Any]]:  # fmt: skip
    """Per version: the matured ``metric`` of each cohort over time, with its interval as a band."""
    by_version: dict[int, list[tuple[float, float, float, float]]] = {}
    for e in events:
        m = e.data.get("metrics", {}).get(metric)
        start = e.data.get("cohort", {}).get("start")
        if not m or m.get("estimate") is None or start is None:
            continue
        low, high = m.get("low", m["estimate"]), m.get("high", m["estimate"])
        by_version.setdefault(e.version, []).append((float(start), float(m["estimate"]), float(low), float(high)))
    points = [p for series in by_version.values() for p in series]
    if not points:
        return []
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return 10 + (t - t0) / span * (width - 20)

    def y(v: float) -> float:
        return height - max(0.0, min(1.0, v)) * height

    out = []
    for version, series in sorted(by_version.items()):
        series.sort()
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _, _ in series)
        band = " ".join([*(f"{x(t):.1f},{y(h):.1f}" for t, _, _, h in series),
                         *(f"{x(t):.1f},{y(lo):.1f}" for t, _, lo, _ in reversed(series))])  # fmt: skip
        out.append({"version": version, "line": line, "band": band, "points": len(series),
                    "last": series[-1][1], "width": width, "height": height})  # fmt: skip
    return out
