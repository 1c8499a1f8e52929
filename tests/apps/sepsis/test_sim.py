"""The simulator: seeded, the stream equals the table, Sepsis-3 ground truth, clinicians, the true effect and
the epidemic scenario."""

from __future__ import annotations

import numpy as np
import pytest

from kawa.apps.sepsis.care import Care, death_probability, respond, true_effect
from kawa.apps.sepsis.codes import Code
from kawa.apps.sepsis.cohort import _sofa_of
from kawa.apps.sepsis.latent import latent_state
from kawa.apps.sepsis.physiology import deterioration, normal, uniform
from kawa.apps.sepsis.settings import Epidemic, SimSettings
from kawa.apps.sepsis.sim import Observations, Simulation, iter_blocks, iter_observations, simulate

COLS = ("patient", "time_h", "code", "value")


def same(a: Observations, b: Observations) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in COLS)


@pytest.fixture(scope="module")
def cohort() -> Simulation:
    return simulate(SimSettings(patients=1500, mode="cohort", hours=24, seed=11))


def test_seeded_and_sorted_in_event_time() -> None:
    s = SimSettings(patients=200, hours=12, seed=4)
    a, b = simulate(s), simulate(s)
    assert same(a.observations, b.observations)
    assert not same(a.observations, simulate(s.model_copy(update={"seed": 5})).observations)
    o = a.observations
    key = np.lexsort((o.code, o.patient, o.time_h))
    assert np.array_equal(key, np.arange(len(o)))
    assert o.time_h.min() >= 0 and o.time_h.max() < 12


def test_census_has_the_configured_patients_and_every_code() -> None:
    sim = simulate(SimSettings(patients=400, hours=24, seed=2))
    o = sim.observations
    # every patient's stay overlaps the window; all but those discharged before a first set are observed
    assert 396 <= len(np.unique(o.patient)) <= 400
    assert ((sim.patients.admit_h < 24) & (sim.patients.discharge_h > 0)).all()
    assert set(np.unique(o.code)) == {int(c) for c in Code}
    hr = o.code == Code.HR
    gaps = np.diff(o.time_h[hr & (o.patient == o.patient[hr][0])]) * 60
    assert gaps.min() >= 15 - 1 / 60 and gaps.max() <= 60 + 1 / 60  # every 15-60 min (to the second)


def test_blocks_and_the_row_stream_equal_the_table() -> None:
    s = SimSettings(patients=150, hours=10, seed=8, epidemic=Epidemic(start_h=3))
    sim = simulate(s)
    blocks = list(iter_blocks(sim.patients, s, sim.care, block_h=0.75))
    assert same(Observations.concat(blocks), sim.observations)
    rows = list(iter_observations(iter(blocks)))
    assert [r.time_h for r in rows] == sim.observations.time_h.tolist()
    assert rows[5].value == sim.observations.value[5]


def test_hash_noise_is_uniform_and_normal() -> None:
    from scipy import stats

    idx = np.arange(20000, dtype=np.int64)
    u = uniform(1, idx, idx * 0 + 3, 7)
    assert stats.kstest(u, "uniform").pvalue > 0.001
    z = normal(1, idx, idx * 0, 2)
    assert stats.kstest(z, "norm").pvalue > 0.001
    assert abs(np.corrcoef(z, normal(1, idx, idx * 0, 3))[0, 1]) < 0.03  # streams are independent


def test_ground_truth_is_sepsis3_and_prevalence_is_about_7_percent(cohort: Simulation) -> None:
    p, o = cohort.patients, cohort.outcomes
    assert 0.05 <= o.sepsis.mean() <= 0.09
    sep = np.flatnonzero(o.sepsis)
    assert p.infected[sep].all()
    t = o.onset_h[sep]
    assert (t >= p.infection_h[sep] - 48).all() and (t <= p.infection_h[sep] + 24).all()
    # at onset SOFA (noise-free, untreated) is >= 2 above baseline; an hour earlier it was not
    for dt, ok in ((0.0, True), (-1.0, False)):
        tt = t + dt
        d = deterioration(tt, p.det_start_h[sep], p.det_ramp_h[sep], p.det_peak[sep], np.full(len(sep), np.nan))
        rise = _sofa_of(latent_state(p, sep, tt, d)) - _sofa_of(latent_state(p, sep, tt, np.zeros(len(sep))))
        in_window = tt >= np.maximum(p.admit_h[sep], p.infection_h[sep] - 48)
        assert ((rise >= 2) == ok)[in_window].all()
    # the prodrome: deterioration has started hours before onset
    lead = t - p.det_start_h[sep]
    assert np.median(lead) > 3
    assert o.confirmed_h[sep].min() >= t.min()


def test_alerts_bring_antibiotics_earlier_and_change_nothing_before(cohort: Simulation) -> None:
    sim = cohort
    p, s = sim.patients, sim.settings
    sep = sim.outcomes.sepsis
    alert = np.where(sep, sim.outcomes.onset_h, np.nan)
    care = respond(p, s, alert)
    base = sim.care.treatment_h
    assert np.nanmedian((base - care.treatment_h)[sep]) > 3  # hours earlier than shift-change screening
    assert (care.treatment_h[sep] <= np.fmin(base[sep], np.inf)).all()
    alerted = simulate(s, alert)
    earliest = np.nanmin(np.where(care.treatment_h != base, care.treatment_h, np.nan))
    a, b = alerted.observations, sim.observations
    assert same(a.take(a.time_h <= earliest), b.take(b.time_h <= earliest))
    assert not same(a, b)
    # fewer deaths with earlier antibiotics, by the known effect
    assert alerted.outcomes.p_death[sep].mean() < sim.outcomes.p_death[sep].mean()


def test_true_effect_is_the_configured_dose_response(cohort: Simulation) -> None:
    sim = cohort
    p, s, care = sim.patients, sim.settings, sim.care
    assert true_effect(p, s, care, 0.0) == 0.0
    e5, e10 = true_effect(p, s, care, 5.0), true_effect(p, s, care, 10.0)
    assert 0 < e5 < e10
    none = s.model_copy(update={"death_log_odds_per_h": 0.0})
    assert true_effect(p, none, care, 5.0) == 0.0
    # the logistic model, by hand, for one septic patient
    i = int(np.flatnonzero(sim.outcomes.sepsis & ~np.isnan(care.treatment_h))[0])
    pd = death_probability(p, s, care.treatment_h)
    pd2 = death_probability(p, s, care.treatment_h - 5.0)
    delay = np.clip(care.treatment_h[i] - p.onset_h[i], 0, s.max_delay_h)
    odds_ratio = (pd[i] / (1 - pd[i])) / (pd2[i] / (1 - pd2[i]))
    assert odds_ratio == pytest.approx(np.exp(s.death_log_odds_per_h * (delay - max(delay - 5.0, 0.0))))


def test_epidemic_raises_rr_and_lowers_spo2_in_non_septic_patients() -> None:
    base = SimSettings(patients=800, hours=48, seed=9)
    epi = base.model_copy(update={"epidemic": Epidemic(start_h=12.0, ramp_h=6.0)})
    a, b = simulate(base), simulate(epi)

    def mean(sim: Simulation, code: Code, lo: float, hi: float) -> float:
        o = sim.observations
        m = (o.code == code) & (o.time_h >= lo) & (o.time_h < hi) & ~sim.outcomes.sepsis[o.patient]
        return float(o.value[m].mean())

    assert mean(b, Code.RR, 0, 12) == pytest.approx(mean(a, Code.RR, 0, 12), abs=0.3)
    assert mean(b, Code.RR, 24, 48) > mean(a, Code.RR, 24, 48) + 1.0
    assert mean(b, Code.SPO2, 24, 48) < mean(a, Code.SPO2, 24, 48) - 0.7
    # case mix: more suspected infection among admissions after the start
    pa, pb = a.patients, b.patients
    late = pb.admit_h >= 12
    assert pb.infected[late].mean() > pa.infected[pa.admit_h >= 12].mean() + 0.05


def test_a_live_loop_feeds_alerts_back_through_the_blocks() -> None:
    s = SimSettings(patients=300, hours=48, seed=12, alert_delay_h=3.0)
    sim = simulate(s)
    p = sim.patients
    # alert every septic patient at onset (the block it falls in is read before the alert is known)
    onset = np.where(sim.outcomes.sepsis, sim.outcomes.onset_h, np.nan)
    alerts = np.full(len(p), np.nan)
    clock = {"t": 0.0}

    def care_now() -> Care:
        seen = onset < clock["t"]
        alerts[seen] = onset[seen]
        return respond(p, s, alerts)

    parts = []
    for block in iter_blocks(p, s, care_now, block_h=0.5):
        parts.append(block)
        clock["t"] += 0.5
    live = Observations.concat(parts)
    care = respond(p, s, onset)
    # alerts came (the antibiotics were earlier than without them), and the live stream is what a
    # simulation with those alerts known up front produces, wherever antibiotics came a block later
    ok = (care.treatment_h - onset >= 0.5) | np.isnan(onset)
    assert (care.treatment_h[sim.outcomes.sepsis] < np.fmin(sim.care.treatment_h, np.inf)[sim.outcomes.sepsis]).any()
    up_front = simulate(s, onset).observations
    keep = ok[live.patient]
    assert same(live.take(keep), up_front.take(ok[up_front.patient]))


def test_bad_inputs_say_what_to_do() -> None:
    from pydantic import ValidationError

    from kawa.apps.sepsis.care import InvalidAlerts

    with pytest.raises(ValidationError, match="sepsis_share must be <= infection_share"):
        SimSettings(sepsis_share=0.3, infection_share=0.2)
    with pytest.raises(ValidationError, match="vitals_every_min"):
        SimSettings(vitals_every_min=(60, 15))
    with pytest.raises(ValidationError, match="Extra inputs"):
        SimSettings(patinets=10)  # type: ignore[call-arg]
    s = SimSettings(patients=20, hours=4)
    with pytest.raises(InvalidAlerts, match="one alert time per patient"):
        simulate(s, np.zeros(3))
    tiny = simulate(SimSettings(patients=1, hours=2, seed=1))
    assert len(tiny.patients) == 1 and len(tiny.observations) > 0
