"""Event-time windows: order-independent within a window, sliding = merged ring of tumbling panes, late records."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.monitor import MonitorError, Window, Windows, WindowState, build_profile

_REF = build_profile({"x": np.random.default_rng(0).normal(size=500)})

records = st.lists(st.tuples(st.floats(0, 99.999), st.floats(-3, 3)), min_size=1, max_size=80)


def _run(spec: Windows, recs: list[tuple[float, float]], cuts: list[int]) -> tuple[Window, ...]:
    state = WindowState()
    bounds = sorted({0, len(recs), *(c % (len(recs) + 1) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        chunk = recs[lo:hi]
        state = spec.add(state, [t for t, _ in chunk], {"x": [v for _, v in chunk]})
    state, out = spec.advance(state, 100.0)
    assert not state.open
    return out


@settings(max_examples=40, deadline=None)
@given(records, st.randoms(use_true_random=False), st.lists(st.integers(0, 80), max_size=5))
def test_shuffling_and_rebatching_records_gives_the_same_windows(recs, rnd, cuts) -> None:  # type: ignore[no-untyped-def]
    for spec in (Windows(_REF, pane=10.0), Windows(_REF, pane=10.0, panes=3)):
        shuffled = list(recs)
        rnd.shuffle(shuffled)
        assert _run(spec, shuffled, cuts) == _run(spec, recs, [])


@settings(max_examples=30, deadline=None)
@given(records)
def test_a_sliding_window_is_the_merge_of_its_tumbling_panes(recs) -> None:  # type: ignore[no-untyped-def]
    tumbling = {w.start: w.profile for w in _run(Windows(_REF, pane=10.0), recs, [])}
    sliding = _run(Windows(_REF, pane=10.0, panes=3), recs, [])
    assert [w.end for w in sliding] == sorted(s + 10.0 for s in tumbling)  # one window per pane with records
    for w in sliding:
        assert w.end - w.start == 30.0
        expected = _REF.empty()
        for start, prof in tumbling.items():
            if w.start <= start < w.end:
                expected = expected.merge(prof)
        assert w.profile == expected
    assert sum(w.profile.n for w in _run(Windows(_REF, pane=10.0), recs, [])) == len(recs)


def test_panes_close_at_the_watermark_and_late_records_are_counted_not_merged() -> None:
    spec = Windows(_REF, pane=60.0, lateness=30.0)
    state = spec.add(WindowState(), [5.0, 65.0, 70.0], {"x": [0.0, 1.0, 2.0]})
    state, out = spec.advance(state, 80.0)
    assert out == ()  # pane [0, 60) waits for its 30 s of lateness
    state = spec.add(state, [59.0], {"x": [0.5]})
    state, out = spec.advance(state, 90.0)
    assert [(w.start, w.end, w.profile.n) for w in out] == [(0.0, 60.0, 2)]
    state = spec.add(state, [10.0, 100.0], {"x": [0.0, 0.0]})
    assert state.late == 1
    state, out = spec.advance(state, 1000.0)
    assert [(w.start, w.end, w.profile.n) for w in out] == [(60.0, 120.0, 3)]  # 65, 70 and 100; not the late 10


def test_the_ring_keeps_only_the_panes_a_sliding_window_needs() -> None:
    spec = Windows(_REF, pane=1.0, panes=4)
    state = WindowState()
    for t in range(100):
        state = spec.add(state, [t + 0.5], {"x": [0.0]})
        state, out = spec.advance(state, t + 1.0)
        assert len(out) == 1 and out[0].profile.n == min(t + 1, 4)
        assert len(state.ring) <= 3 and not state.open


def test_bad_window_declarations_and_times_get_clear_errors() -> None:
    with pytest.raises(MonitorError, match="positive number of seconds"):
        Windows(_REF, pane=0)
    with pytest.raises(MonitorError, match="at least one pane"):
        Windows(_REF, pane=1.0, panes=0)
    with pytest.raises(MonitorError, match="finite"):
        Windows(_REF, pane=1.0).add(WindowState(), [float("nan")], {"x": [1.0]})
    with pytest.raises(MonitorError, match="one value per event time"):
        Windows(_REF, pane=1.0).add(WindowState(), [1.0, 2.0], {"x": [1.0]})
