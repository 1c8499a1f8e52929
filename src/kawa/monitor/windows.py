"""Tumbling and sliding event-time windows of profile sketches.

Records are assigned to *panes* by event time: pane ``k`` holds times in ``[origin + k*pane, origin + (k+1)*pane)``.
A tumbling window is one pane; a sliding window of ``panes`` panes is the merge of a ring of consecutive
panes, so it slides by one pane. A pane closes when the watermark passes its end (plus the allowed lateness);
records for a closed pane are counted as late and dropped. Since a window is a sum of counts, its sketch does
not depend on the order in which its records arrived or how they were batched.

When the reference keeps raw values (the exact mode), every pane keeps a reservoir of at most ``sample_cap`` raw
values per numeric feature, and a window merges its panes' reservoirs into one of the same cap: all of the
window's values while it has at most ``sample_cap`` of them, a uniform subsample beyond. Memory per feature is
O(``panes * sample_cap``) whatever the traffic; the reservoir depends on the records' arrival order but not on
how they were batched.

Everything here is pure: state in, state and closed windows out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kawa.monitor.errors import MonitorError
from kawa.monitor.sample import DEFAULT_WINDOW_SAMPLE_CAP
from kawa.monitor.sketch import Profile


@dataclass(frozen=True)
class Window:
    """A closed window: its event-time span ``[start, end)`` and the sketch of the records in it."""

    start: float
    end: float
    profile: Profile


@dataclass(frozen=True)
class WindowState:
    """Open panes (by index), the last closed panes a sliding window still needs, and the late-record count."""

    open: Mapping[int, Profile] = field(default_factory=dict)
    ring: tuple[tuple[int, Profile], ...] = ()
    closed_before: int | None = None
    late: int = 0


@dataclass(frozen=True)
class Windows:
    """Event-time windows of ``panes`` panes of ``pane`` seconds each (``panes == 1``: tumbling); ``sample_cap``
    bounds each window's reservoir of raw values per feature (used only when the reference keeps a sample)."""

    reference: Profile
    pane: float
    panes: int = 1
    origin: float = 0.0
    lateness: float = 0.0
    sample_cap: int = DEFAULT_WINDOW_SAMPLE_CAP

    def __post_init__(self) -> None:
        if not (self.pane > 0 and math.isfinite(self.pane)):
            raise MonitorError(f"a window pane must be a positive number of seconds, got {self.pane}")
        if self.panes < 1:
            raise MonitorError(f"a sliding window needs at least one pane, got {self.panes}")
        if self.lateness < 0:
            raise MonitorError(f"allowed lateness cannot be negative, got {self.lateness}")
        if self.sample_cap < 1:
            raise MonitorError(f"a window's reservoir keeps at least one value per feature, got {self.sample_cap}")

    def pane_of(self, time: float) -> int:
        return math.floor((time - self.origin) / self.pane)

    def add(
        self,
        state: WindowState,
        times: Sequence[float],
        columns: Mapping[str, Sequence[Any]],
        score: Sequence[Any] | None = None,
    ) -> WindowState:
        """The state with a batch of records (event times and per-feature values) counted into their panes."""
        t = np.asarray(times, dtype=np.float64)
        if t.ndim != 1 or not np.all(np.isfinite(t)):
            raise MonitorError("event times must be one finite number (seconds) per record")
        lengths = {len(v) for v in columns.values()} | ({len(score)} if score is not None else set())
        if lengths - {t.size}:
            raise MonitorError(f"every column needs one value per event time ({t.size}), got lengths {sorted(lengths)}")
        idx = np.floor((t - self.origin) / self.pane).astype(np.int64)
        cols = {name: np.asarray(v) for name, v in columns.items()}
        sc = None if score is None else np.asarray(score)
        panes = dict(state.open)
        late = state.late
        for k in np.unique(idx):
            mask = idx == k
            key = int(k)
            if state.closed_before is not None and key < state.closed_before:
                late += int(mask.sum())
                continue
            batch = {name: v[mask] for name, v in cols.items()}
            base = panes.get(key)
            panes[key] = (base if base is not None else self.reference.empty(self.sample_cap)).add(
                batch, None if sc is None else sc[mask]
            )
        return WindowState(panes, state.ring, state.closed_before, late)

    def advance(self, state: WindowState, watermark: float) -> tuple[WindowState, tuple[Window, ...]]:
        """Close every pane whose end (plus lateness) is at or before ``watermark``; emit one window per closed
        pane that received records, ending at that pane."""
        limit = math.floor((watermark - self.lateness - self.origin) / self.pane)
        closing = sorted(k for k in state.open if k < limit)
        ring = list(state.ring)
        out: list[Window] = []
        for k in closing:
            ring.append((k, state.open[k]))
            ring = [(j, p) for j, p in ring if j > k - self.panes]
            merged = ring[0][1]
            for _, p in ring[1:]:
                merged = merged.merge(p)
            start = self.origin + (k - self.panes + 1) * self.pane
            out.append(Window(start, self.origin + (k + 1) * self.pane, merged))
        remaining = {k: p for k, p in state.open.items() if k >= limit}
        closed = limit if state.closed_before is None else max(limit, state.closed_before)
        ring = [(j, p) for j, p in ring if j > closed - self.panes]
        return WindowState(remaining, tuple(ring), closed, state.late), tuple(out)
