"""Streaming features equal the batch features, bit for bit, on simulated data; and they mean what they say."""

from __future__ import annotations

import numpy as np

from kawa.apps.sepsis.codes import Code
from kawa.apps.sepsis.features import NAMES, FeatureState, batch_features, column, features, set_ends, update
from kawa.apps.sepsis.settings import Epidemic, SimSettings
from kawa.apps.sepsis.sim import Observation, iter_blocks, iter_observations, simulate


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
