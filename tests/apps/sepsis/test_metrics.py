"""Clinical metrics on matured cohorts, against a brute-force transcription of their definitions and
scikit-learn's precision and recall, on NEWS2 alerts over a seeded simulated cohort."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score

from kawa.apps.sepsis.alerts import AlertPolicy, run
from kawa.apps.sepsis.metrics import (
    Cohort,
    InvalidCohort,
    Metrics,
    Windows,
    bedside_scores,
    clinical_metrics,
    cohort_of,
)
from kawa.apps.sepsis.settings import SimSettings
from kawa.apps.sepsis.sim import Simulation, simulate


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(SimSettings(patients=300, mode="cohort", hours=36, seed=5))


def news2_alerts(sim: Simulation, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    pat, t, scores = bedside_scores(sim.observations)
    policy = AlertPolicy(threshold, suppress_h=12, budget_per_h=1000)
    got = [(p, u) for p, u, v in run(policy, zip(pat.tolist(), t.tolist(), scores["news2"].tolist(), strict=True))
           if v.alert]  # fmt: skip
    return np.array([p for p, _ in got], dtype=np.int64), np.array([u for _, u in got])


def brute(ap: np.ndarray, at: np.ndarray, c: Cohort, as_of: float, w: Windows) -> Metrics:
    """The definitions of docs/sepsis.md, one alert and one patient at a time."""
    alerts = [(int(p), float(t)) for p, t in zip(ap, at, strict=True) if t < as_of]

    def hit(p: int, t: float) -> bool:
        o = float(c.onset_h[p])
        return not math.isnan(o) and o - w.window_h <= t <= o + w.grace_h

    matured = [(p, t) for p, t in alerts if as_of >= t + w.window_h + w.label_lag_h]
    n_hits = sum(hit(p, t) for p, t in matured)
    septic, leads, gains, detected = 0, [], [], 0
    for p in range(len(c)):
        o = float(c.onset_h[p])
        if math.isnan(o) or not (c.start_h[p] <= o < min(c.end_h[p], as_of)) or as_of < o + w.grace_h + w.label_lag_h:
            continue
        septic += 1
        first = min((t for q, t in alerts if q == p and hit(q, t)), default=None)
        if first is not None:
            detected += 1
            leads.append(o - first)
            if not math.isnan(c.screen_h[p]):
                gains.append(float(c.screen_h[p]) - first)
    days = sum(max(0.0, min(float(c.end_h[p]), as_of) - float(c.start_h[p])) for p in range(len(c))) / 24
    return Metrics(
        alerts=len(alerts), matured_alerts=len(matured), hits=n_hits,
        ppv=n_hits / len(matured) if matured else math.nan, septic=septic, detected=detected,
        sensitivity=detected / septic if septic else math.nan,
        lead_time_h_median=statistics.median(leads) if leads else math.nan,
        gain_vs_screen_h_median=statistics.median(gains) if gains else math.nan,
        patient_days=days, alerts_per_100_patient_days=100 * len(alerts) / days,
    )  # fmt: skip


def same(a: Metrics, b: Metrics) -> None:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-9), name


@pytest.mark.parametrize("threshold", [5, 7])
def test_metrics_equal_the_brute_force_definitions_at_every_stage_of_maturity(sim: Simulation, threshold: int) -> None:
    ap, at = news2_alerts(sim, threshold)
    c = cohort_of(sim)
    assert len(ap) > 50 and int(np.isfinite(c.onset_h).sum()) > 10
    end = float(np.max(sim.patients.discharge_h))
    for as_of in (24.0, 60.0, 120.0, end + 40):
        same(clinical_metrics(ap, at, c, as_of), brute(ap, at, c, as_of, Windows()))


def test_ppv_and_sensitivity_are_sklearns_precision_and_recall_once_everything_matured(sim: Simulation) -> None:
    ap, at = news2_alerts(sim, 5)
    c = cohort_of(sim)
    as_of = float(np.max(sim.patients.discharge_h)) + 100
    m = clinical_metrics(ap, at, c, as_of)
    o = c.onset_h[ap]
    truth = (at >= o - 12) & (at <= o + 3)  # NaN onsets compare False
    assert m.ppv == pytest.approx(precision_score(truth, np.ones(len(ap), dtype=bool)))
    septic = np.flatnonzero((c.onset_h >= c.start_h) & (c.onset_h < c.end_h))
    flagged = {int(p) for p, hit in zip(ap, truth, strict=True) if hit}
    assert m.sensitivity == pytest.approx(recall_score(np.ones(len(septic)), [int(p) in flagged for p in septic]))
    # NEWS2 >= 5 on a simulated ward: a low hit rate, most septic patients caught around onset, hours before screening
    assert 0.005 < m.ppv < 0.2 and 0.2 < m.sensitivity < 0.9 and m.gain_vs_screen_h_median > 2


def test_nothing_is_counted_before_it_matured(sim: Simulation) -> None:
    ap, at = news2_alerts(sim, 5)
    m = clinical_metrics(ap, at, cohort_of(sim), as_of_h=30.0)
    assert m.alerts > 0 and m.matured_alerts == 0 and math.isnan(m.ppv) and m.septic == 0


def test_alerts_must_fit_the_cohort(sim: Simulation) -> None:
    with pytest.raises(InvalidCohort, match="one patient index"):
        clinical_metrics([len(sim.patients)], [1.0], cohort_of(sim), 10.0)


def challenge_utility(labels: np.ndarray, predictions: np.ndarray) -> float:
    """``compute_prediction_utility`` of the PhysioNet/CinC 2019 evaluation code, transcribed."""
    dt_early, dt_optimal, dt_late, max_u_tp, min_u_fn, u_fp, u_tn = -12, -6, 3.0, 1, -2, -0.05, 0
    if np.any(labels):
        is_septic, t_sepsis = True, float(np.argmax(labels) - dt_optimal)
    else:
        is_septic, t_sepsis = False, float("inf")
    m_1 = max_u_tp / (dt_optimal - dt_early)
    b_1 = -m_1 * dt_early
    m_2 = -max_u_tp / (dt_late - dt_optimal)
    b_2 = -m_2 * dt_late
    m_3 = min_u_fn / (dt_late - dt_optimal)
    b_3 = -m_3 * dt_optimal
    u = np.zeros(len(labels))
    for t in range(len(labels)):
        if t <= t_sepsis + dt_late:
            if is_septic and predictions[t]:
                if t <= t_sepsis + dt_optimal:
                    u[t] = max(m_1 * (t - t_sepsis) + b_1, u_fp)
                elif t <= t_sepsis + dt_late:
                    u[t] = m_2 * (t - t_sepsis) + b_2
            elif not is_septic and predictions[t]:
                u[t] = u_fp
            elif is_septic and not predictions[t]:
                if t <= t_sepsis + dt_optimal:
                    u[t] = 0
                elif t <= t_sepsis + dt_late:
                    u[t] = m_3 * (t - t_sepsis) + b_3
            elif not is_septic and not predictions[t]:
                u[t] = u_tn
    return float(np.sum(u))


def test_the_utility_is_the_challenges_on_random_hourly_predictions() -> None:
    from kawa.apps.sepsis.metrics import normalised_utility

    rng = np.random.default_rng(2019)
    for _trial in range(20):
        n = 40
        lengths = rng.integers(5, 60, n)
        onset = np.where(rng.random(n) < 0.3, rng.integers(6, 50, n).astype(float), np.nan)
        onset = np.where(onset < lengths, onset, np.nan)
        pat = np.repeat(np.arange(n), lengths)
        hour = np.concatenate([np.arange(k) for k in lengths]).astype(float)
        pred = rng.random(len(pat)) < rng.uniform(0.02, 0.5)
        observed = best = inaction = 0.0
        for p in range(n):
            rows = pat == p
            k = int(lengths[p])
            labels = np.zeros(k, dtype=int)
            if not np.isnan(onset[p]):
                labels[max(0, int(onset[p]) - 6):] = 1  # the challenge's label: 6 h before t_sepsis on
            ideal = np.zeros(k, dtype=int)
            if labels.any():
                ts = int(np.argmax(labels)) + 6
                ideal[max(0, ts - 12): min(ts + 3 + 1, k)] = 1
            observed += challenge_utility(labels, pred[rows])
            best += challenge_utility(labels, ideal)
            inaction += challenge_utility(labels, np.zeros(k, dtype=int))
        want = (observed - inaction) / (best - inaction)
        assert normalised_utility(pat, hour, pred, onset) == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_the_boards_baselines_are_measured_on_a_matured_history() -> None:
    from kawa.apps.sepsis.app_settings import SepsisSettings
    from kawa.apps.sepsis.history import measure_history

    rules = measure_history(SepsisSettings(), admissions=150)
    assert [r.rule for r in rules] == ["NEWS2 >= 7", "NEWS2 >= 5", "qSOFA >= 2", "SIRS >= 2"]
    assert all(r.septic > 0 and "150 admissions" in r.cohort for r in rules)
    by = {r.rule: r for r in rules}
    assert by["NEWS2 >= 5"].alerts >= by["NEWS2 >= 7"].alerts  # a lower threshold alerts more
    assert all(r.ppv is None or 0 <= r.ppv <= 1 for r in rules)
