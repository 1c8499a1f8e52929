"""The randomised silent arm: always-valid ITT intervals cover the simulator's true effect of showing alerts,
over seeded re-randomisations of one simulated cohort, and contain scipy's fixed-sample Welch interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from kawa.apps.sepsis.alerts import AlertPolicy, run
from kawa.apps.sepsis.care import respond
from kawa.apps.sepsis.events import pseudonym
from kawa.apps.sepsis.metrics import bedside_scores
from kawa.apps.sepsis.settings import SimSettings
from kawa.apps.sepsis.silent import arms_of, silent_arm_trial
from kawa.apps.sepsis.sim import Simulation, simulate


@pytest.fixture(scope="module")
def cohort() -> tuple[Simulation, np.ndarray, list[str]]:
    sim = simulate(SimSettings(patients=1200, hours=36, mode="cohort", seed=8))
    pat, t, scores = bedside_scores(sim.observations)
    first = np.full(len(sim.patients), np.nan)
    rows = zip(pat.tolist(), t.tolist(), scores["news2"].tolist(), strict=True)
    for p, u, v in run(AlertPolicy(5, 12, 10_000), rows):
        if v.alert and np.isnan(first[p]):
            first[p] = u
    return sim, first, [pseudonym(f"Patient/sim-{i}", b"test-key") for i in range(len(sim.patients))]


Cohort = tuple[Simulation, np.ndarray, list[str]]


def test_the_intervals_cover_the_true_effects_over_re_randomisations(cohort: Cohort) -> None:
    sim, first, names = cohort
    trials = [silent_arm_trial(sim, first, arms_of(names, f"salt-{k}")) for k in range(60)]
    delay = [t.antibiotic_delay_h for t in trials]
    assert delay[0].true < -3.0  # showing alerts brings antibiotics hours earlier for septic patients
    assert sum(e.covers for e in delay) / len(delay) >= 0.9
    assert sum(t.mortality.covers for t in trials) / len(trials) >= 0.9
    assert np.mean([e.estimate for e in delay]) == pytest.approx(delay[0].true, abs=1.0)  # unbiased
    assert np.mean([e.upper < 0 for e in delay]) >= 0.5  # and usually detected on 1,200 admissions
    assert all(t.mortality.true == trials[0].mortality.true for t in trials)  # the truth is the population's


def test_the_always_valid_interval_contains_scipys_welch_interval(cohort: Cohort) -> None:
    sim, first, names = cohort
    shown = arms_of(names, "salt-welch")
    trial = silent_arm_trial(sim, first, shown)
    care = respond(sim.patients, sim.settings, np.where(shown, first, np.nan))
    cap = sim.settings.max_delay_h
    d = np.clip(np.nan_to_num(care.treatment_h - sim.outcomes.onset_h, nan=cap), 0, cap)
    septic = sim.patients.septic
    welch = stats.ttest_ind(d[septic & shown], d[septic & ~shown], equal_var=False).confidence_interval(0.95)
    e = trial.antibiotic_delay_h
    assert e.estimate == pytest.approx(d[septic & shown].mean() - d[septic & ~shown].mean())
    assert e.lower <= welch.low and welch.high <= e.upper
    assert arms_of(names, "salt-welch").tolist() == shown.tolist() and 0.4 < shown.mean() < 0.6  # sticky, balanced
