"""Honest clinical metrics of an alerting rule, on matured cohorts: pure numpy, no I/O.

An alert at ``a`` is a **hit** when the patient's Sepsis-3 onset ``o`` satisfies ``o - window_h <= a <=
o + grace_h`` (up to ``window_h`` hours early, or ``grace_h`` late). Everything is counted only once it has
**matured** at ``as_of_h``: the truth about an alert is known once any onset that would make it a hit has been
confirmed, i.e. ``as_of_h >= a + window_h + label_lag_h``; a septic patient counts for sensitivity once
``as_of_h >= o + grace_h + label_lag_h``. Until then a number would be biased towards whatever is known first
(false alarms in non-septic patients are known at discharge, hits only at confirmation).

- **PPV** ("hit rate"): hits / matured alerts — the share of triggered screens that are positive.
- **Sensitivity**: matured septic patients (onset inside their observed stay) with a hit / all of them.
- **Lead time**: onset minus the first hit, median over detected patients (hours; negative = late).
- **Gain over screening**: the shift-change screen that found the patient minus the first hit, median over
  detected patients the screening found too (hours the alert came earlier).
- **Alerts per 100 patient-days**: all alerts raised before ``as_of_h`` per 100 days of observed stay.
- **Normalised utility** (PhysioNet/CinC Challenge 2019) of hourly predictions: :func:`normalised_utility`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kawa.errors import KawaError

if TYPE_CHECKING:
    from kawa.apps.sepsis.sim import Observations, Simulation

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741

__all__ = [
    "Cohort", "Metrics", "UtilityWeights", "Windows", "bedside_scores", "clinical_metrics", "cohort_of", "hits",
    "normalised_utility",
]


class InvalidCohort(KawaError):
    """Alerts or cohort columns that do not fit together."""


@dataclass(frozen=True)
class Windows:
    window_h: float = 12.0
    grace_h: float = 3.0
    label_lag_h: float = 24.0


@dataclass(frozen=True)
class Cohort:
    """One row per patient: observed stay ``[start_h, end_h)``, Sepsis-3 onset (NaN: none), the first
    shift-change screen that found them (NaN: none)."""

    start_h: F
    end_h: F
    onset_h: F
    screen_h: F

    def __len__(self) -> int:
        return len(self.start_h)


@dataclass(frozen=True)
class Metrics:
    alerts: int
    matured_alerts: int
    hits: int
    ppv: float
    septic: int
    detected: int
    sensitivity: float
    lead_time_h_median: float
    gain_vs_screen_h_median: float
    patient_days: float
    alerts_per_100_patient_days: float


def hits(alert_patient: I, alert_h: F, onset_h: F, w: Windows) -> npt.NDArray[np.bool_]:
    """Whether each alert is a hit (see the module doc)."""
    o = onset_h[alert_patient]
    return (alert_h >= o - w.window_h) & (alert_h <= o + w.grace_h)


def _median(x: F) -> float:
    return float(np.median(x)) if len(x) else math.nan


def clinical_metrics(alert_patient: npt.ArrayLike, alert_h: npt.ArrayLike, cohort: Cohort, as_of_h: float,
                     w: Windows | None = None) -> Metrics:  # fmt: skip
    """The metrics of alerts (patient index, time) on ``cohort`` as known at ``as_of_h``."""
    w = w or Windows()
    pat = np.asarray(alert_patient, dtype=np.int64)
    at = np.asarray(alert_h, dtype=np.float64)
    if pat.shape != at.shape or (len(pat) and (pat.min() < 0 or pat.max() >= len(cohort))):
        raise InvalidCohort("alerts need one patient index (into the cohort) and one time each")
    raised = at < as_of_h
    pat, at = pat[raised], at[raised]
    hit = hits(pat, at, cohort.onset_h, w)
    matured = as_of_h >= at + w.window_h + w.label_lag_h
    n_matured = int(matured.sum())
    n_hits = int((hit & matured).sum())

    o = cohort.onset_h
    end = np.minimum(cohort.end_h, as_of_h)
    eligible = (o >= cohort.start_h) & (o < end) & (as_of_h >= o + w.grace_h + w.label_lag_h)
    first = np.full(len(cohort), np.inf)
    np.minimum.at(first, pat[hit], at[hit])
    detected = eligible & np.isfinite(first)
    lead = (o - first)[detected]
    screened = detected & ~np.isnan(cohort.screen_h)
    gain = (cohort.screen_h - first)[screened]
    days = float(np.clip(end - cohort.start_h, 0.0, None).sum()) / 24.0
    n_septic = int(eligible.sum())
    return Metrics(
        alerts=len(at), matured_alerts=n_matured, hits=n_hits,
        ppv=n_hits / n_matured if n_matured else math.nan,
        septic=n_septic, detected=int(detected.sum()),
        sensitivity=int(detected.sum()) / n_septic if n_septic else math.nan,
        lead_time_h_median=_median(lead), gain_vs_screen_h_median=_median(gain), patient_days=days,
        alerts_per_100_patient_days=100.0 * len(at) / days if days > 0 else math.nan,
    )  # fmt: skip


def cohort_of(sim: Simulation) -> Cohort:
    """The cohort of a simulation: each stay clipped to the observed window, onset, the screening."""
    from kawa.apps.sepsis.sim import window

    t0, t1 = window(sim.settings, sim.patients)
    p = sim.patients
    return Cohort(np.maximum(p.admit_h, t0), np.minimum(p.discharge_h, t1), sim.outcomes.onset_h, sim.care.screen_h)


def bedside_scores(obs: Observations) -> tuple[I, F, dict[str, npt.NDArray[np.int64]]]:
    """NEWS2, qSOFA and SIRS after every complete (patient, time) group of an observations table, on the
    last values so far — what the scoring function computes event by event: patient, time, scores."""
    from kawa.apps.sepsis.codes import Code
    from kawa.apps.sepsis.features import last_values, set_ends
    from kawa.apps.sepsis.scores import news2, qsofa, sirs

    rows = set_ends(obs)
    v = last_values(obs, rows)

    def c(code: Code) -> F:
        return v[:, int(code)]

    acvpu = np.nan_to_num(c(Code.ACVPU))
    scores = {
        "news2": news2(c(Code.RR), c(Code.SPO2), np.nan_to_num(c(Code.O2_FLOW)), c(Code.SBP), c(Code.HR), acvpu,
                       c(Code.TEMP)),
        "qsofa": qsofa(c(Code.RR), c(Code.SBP), np.where(np.isnan(c(Code.GCS)), 15.0, c(Code.GCS)), acvpu),
        "sirs": sirs(c(Code.TEMP), c(Code.HR), c(Code.RR), c(Code.WBC)),
    }
    return obs.patient[rows].astype(np.int64), obs.time_h[rows], scores


@dataclass(frozen=True)
class UtilityWeights:
    """The PhysioNet/CinC Challenge 2019 utility: hours relative to onset and the rewards."""

    dt_early: float = -12.0
    dt_optimal: float = -6.0
    dt_late: float = 3.0
    max_u_tp: float = 1.0
    min_u_fn: float = -2.0
    u_fp: float = -0.05
    u_tn: float = 0.0


def _utility_rows(rel: F, septic: npt.NDArray[np.bool_], pred: npt.NDArray[np.bool_], w: UtilityWeights) -> F:
    m1 = w.max_u_tp / (w.dt_optimal - w.dt_early)
    b1 = -m1 * w.dt_early
    m2 = -w.max_u_tp / (w.dt_late - w.dt_optimal)
    b2 = -m2 * w.dt_late
    m3 = w.min_u_fn / (w.dt_late - w.dt_optimal)
    b3 = -m3 * w.dt_optimal
    r = np.nan_to_num(rel)
    early = r <= w.dt_optimal
    tp = np.where(early, np.maximum(m1 * r + b1, w.u_fp), m2 * r + b2)
    fn = np.where(early, 0.0, m3 * r + b3)
    u_septic = np.where(r <= w.dt_late, np.where(pred, tp, fn), 0.0)
    u_other = np.where(pred, w.u_fp, w.u_tn)
    out: F = np.where(septic, u_septic, u_other)
    return out


def normalised_utility(patient: npt.ArrayLike, time_h: npt.ArrayLike, predicted: npt.ArrayLike, onset_h: F,
                       w: UtilityWeights | None = None) -> float:  # fmt: skip
    """The PhysioNet/CinC 2019 normalised utility of hourly predictions (one row per patient-hour: patient
    index, hour, prediction) against onsets (``onset_h`` per patient, NaN: never septic). Onset plays the
    challenge's ``t_sepsis``; 1 is the best prediction (positive from 12 h before to 3 h after onset), 0
    predicting nothing."""
    w = w or UtilityWeights()
    pat = np.asarray(patient, dtype=np.int64)
    t = np.asarray(time_h, dtype=np.float64)
    pred = np.asarray(predicted, dtype=bool)
    o = onset_h[pat]
    septic = ~np.isnan(o)
    rel = t - o
    best = septic & (rel >= w.dt_early) & (rel <= w.dt_late)
    observed = float(_utility_rows(rel, septic, pred, w).sum())
    best_u = float(_utility_rows(rel, septic, best, w).sum())
    inaction = float(_utility_rows(rel, septic, np.zeros(len(pat), dtype=bool), w).sum())
    return (observed - inaction) / (best_u - inaction) if best_u != inaction else math.nan
