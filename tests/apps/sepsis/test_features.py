"""Streaming features equal the batch features, bit for bit, on simulated data; and they mean what they say."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.apps.sepsis.codes import Code
from kawa.apps.sepsis.features import (
    NAMES,
    FeatureState,
    batch_features,
    column,
    features,
    set_ends,
    update,
    update_rows,
)
from kawa.apps.sepsis.settings import Epidemic, SimSettings
from kawa.apps.sepsis.sim import Observation, Observations, iter_blocks, iter_observations, simulate


def test_stream_equals_batch_exactly_on_simulated_data() -> None:
    s = SimSettings(patients=70, hours=14, seed=21, epidemic=Epidemic(start_h=4))
    sim = simulate(s)
    states: dict[int, FeatureState] = {}
    streamed = []
    for o in iter_observations(iter_blocks(sim.patients, s, sim.care, block_h=2.0)):
        st = update(states.get(o.patient, FeatureState()), o)
        states[o.patient] = st
        streamed.append(features(st))
    got = np.array(streamed)
    want = batch_features(sim.observations)
    assert got.shape == want.shape == (len(sim.observations), len(NAMES))
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all()
    # and for a subset of rows (the end of each vital set), batch agrees with itself
    ends = set_ends(sim.observations)
    np.testing.assert_array_equal(batch_features(sim.observations, ends), want[ends])
    assert np.isfinite(want[:, column("hr_mean6h")]).mean() > 0.9


def test_features_by_hand() -> None:
    hr = int(Code.HR)
    rows = [Observation(1, 0.0, hr, 80.0), Observation(1, 0.0, int(Code.RR), 16.0), Observation(1, 2.0, hr, 90.0),
            Observation(1, 7.0, hr, 120.0)]
    st = FeatureState()
    out = []
    for r in rows:
        st = update(st, r)
        out.append(dict(zip(NAMES, features(st), strict=True)))
    last = out[-1]
    assert last["hr_last"] == 120 and last["hr_delta"] == 30 and last["hr_since_h"] == 0
    assert last["hr_max6h"] == 120 and last["hr_min6h"] == 90 and last["hr_mean6h"] == 105  # 80 at t=0 left
    assert last["rr_since_h"] == 7 and last["rr_last"] == 16 and np.isnan(last["rr_max6h"])  # out of window
    assert last["rr_missing"] == 2 and last["hr_missing"] == 0  # 3 distinct times; RR at one of them
    assert np.isnan(last["temp_last"]) and last["temp_missing"] == 3
    assert np.isnan(out[0]["hr_delta"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # patient
            st.integers(0, 40),  # time step (quarter hours; repeats make ties)
            st.sampled_from([int(Code.HR), int(Code.RR), int(Code.WBC)]),
            st.floats(-50, 500, allow_nan=False, width=32),
        ),
        max_size=60,
    )
)
def test_stream_equals_batch_on_any_ordered_table(raw: list[tuple[int, int, int, float]]) -> None:
    """Property: for any table in event-time order (ties, gaps, one code only, out-of-window values), the
    streamed features equal the batch features exactly."""
    rows = sorted({(t * 0.25, p, c): v for p, t, c, v in raw}.items())
    table = Observations(
        np.array([p for (_, p, _), _ in rows], dtype=np.int32), np.array([t for (t, _, _), _ in rows]),
        np.array([c for (_, _, c), _ in rows], dtype=np.int8), np.array([v for _, v in rows], dtype=np.float64),
    )
    states: dict[int, FeatureState] = {}
    streamed = []
    for o in iter_observations(table):
        s = update(states.get(o.patient, FeatureState()), o)
        states[o.patient] = s
        streamed.append(features(s))
    want = batch_features(table)
    got = np.array(streamed).reshape(want.shape)
    assert ((got == want) | (np.isnan(got) & np.isnan(want))).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from([int(Code.HR), int(Code.RR), int(Code.WBC)]),
                  st.floats(-50, 500, allow_nan=False, width=32)),
        max_size=40,
    ),
    st.integers(1, 6),
)
def test_update_rows_is_update_of_each_row_skipping_older_ones(rows: list[tuple[int, int, float]], chunk: int) -> None:
    """Rows applied in chunks (as the scoring function charts a message) give the state of one row at a time
    with the older-row rule; a row earlier than the state's latest changes nothing."""
    timed = [(step / 4.0, code, value) for step, code, value in rows]
    want = FeatureState()
    for t, code, value in timed:
        if not want.now > t:
            want = update(want, Observation(0, t, code, value))
    got = FeatureState()
    for i in range(0, len(timed), chunk):
        got = update_rows(got, timed[i : i + chunk])
    assert got.times == want.times and got.codes == want.codes
    assert got.now == want.now or (np.isnan(got.now) and np.isnan(want.now))
    a, b = np.array(features(got)), np.array(features(want))
    assert ((a == b) | (np.isnan(a) & np.isnan(b))).all()
