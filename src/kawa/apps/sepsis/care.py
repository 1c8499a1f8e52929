"""The clinicians and the outcomes: when antibiotics come (after an alert, after a shift-change screen, or
when shock is obvious), and who dies — with the treatment effect known exactly.

Mortality of a septic course is ``logit p = base + frailty + severity + k x clip(delay, 0, max_delay)``,
``delay`` = antibiotics - onset in hours and ``k`` = ``SimSettings.death_log_odds_per_h``: the "true effect"
an evaluation must recover, as :func:`true_effect` of a shift in antibiotic time. Death is decided by one
uniform per patient drawn once (common random numbers), so two arms differ only through treatment times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.cohort import Patients
from kawa.apps.sepsis.physiology import deterioration, uniform
from kawa.apps.sepsis.settings import SimSettings
from kawa.errors import KawaError

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

_MAX_SCREENS = 60


class InvalidAlerts(KawaError):
    """Alert times that do not fit the patient table."""


@dataclass(frozen=True)
class Care:
    """Per patient: first alert (NaN none), first positive screen, antibiotics (NaN never)."""

    alert_h: F
    screen_h: F
    treatment_h: F


@dataclass(frozen=True)
class Outcomes:
    """Per patient, the delayed outcomes: Sepsis-3 onset, when it is confirmed (the end of the Sepsis-3
    window, or discharge), death at discharge and its probability."""

    sepsis: B
    onset_h: F
    confirmed_h: F
    discharge_h: F
    died: B
    p_death: F


def _lognormal(seed: int, n: int, stream: int, median: float, sigma: float = 0.5) -> F:
    idx = np.arange(n, dtype=np.int64)
    u = uniform(seed, idx, np.zeros(n, dtype=np.int64), stream)
    from scipy.special import ndtri

    out: F = median * np.exp(sigma * np.asarray(ndtri(u), dtype=np.float64))
    return out


def respond(p: Patients, s: SimSettings, alert_h: F | None = None) -> Care:
    """Antibiotic times. A septic course is found at the first shift-change screen (every
    ``screen_every_h`` from ``screen_first_h``) that detects it — probability ``min(0.95, screen_gain x d)``
    at deterioration ``d`` — or when it reaches shock (d >= 1), whichever is first; an alert (``alert_h``,
    NaN for none) brings antibiotics ``alert_delay_h`` (median) later if that is sooner. Non-septic
    patients are treated only after an alert (their antibiotics change nothing)."""
    n = len(p)
    alerts = np.full(n, np.nan) if alert_h is None else np.asarray(alert_h, dtype=np.float64)
    if alerts.shape != (n,):
        raise InvalidAlerts(
            f"alert_h has shape {alerts.shape}, the simulation has {n} patients: pass one alert time per "
            "patient (hours from the epoch), NaN for none"
        )
    screen = np.full(n, np.nan)
    idx = np.flatnonzero(p.septic_course)
    start = p.det_start_h[idx]
    k0 = np.ceil((start - s.screen_first_h) / s.screen_every_h)
    found = np.full(len(idx), np.nan)
    none = np.full(len(idx), np.nan)
    for j in range(_MAX_SCREENS):
        t = s.screen_first_h + (k0 + j) * s.screen_every_h
        d = deterioration(t, start, p.det_ramp_h[idx], p.det_peak[idx], none)
        u = uniform(s.seed, idx, (k0 + j).astype(np.int64), 50)
        hit = np.isnan(found) & (t < p.discharge_h[idx]) & (u < np.minimum(0.95, s.screen_gain * d))
        found[hit] = t[hit]
    screen[idx] = found
    shock = np.full(n, np.nan)
    big = p.det_peak[idx] >= 1.0
    shock[idx[big]] = start[big] + p.det_ramp_h[idx][big] / p.det_peak[idx][big] + 1.0
    tx = np.fmin(screen + _lognormal(s.seed, n, 51, s.screen_delay_h), shock)
    tx = np.where(p.septic_course, tx, np.nan)
    tx = np.fmin(tx, alerts + _lognormal(s.seed, n, 52, s.alert_delay_h))
    tx = np.where(tx < p.discharge_h, tx, np.nan)
    return Care(alert_h=alerts, screen_h=screen, treatment_h=tx)


def death_probability(p: Patients, s: SimSettings, treatment_h: F) -> F:
    """P(death at discharge) given antibiotic times (NaN: never, i.e. the maximal delay)."""
    z = p.frailty
    logit = -5.9 + 2.0 * z + 1.0 * (p.infected & ~p.septic_course)
    delay = np.clip(np.nan_to_num(treatment_h - p.onset_h, nan=s.max_delay_h), 0.0, s.max_delay_h)
    septic = p.septic_course & p.septic
    sev = np.nan_to_num(p.det_peak - 0.95)
    logit = logit + np.where(septic, 1.3 + 6.0 * sev + s.death_log_odds_per_h * delay, 0.0)
    out: F = 1.0 / (1.0 + np.exp(-logit))
    return out


def outcomes(p: Patients, s: SimSettings, care: Care) -> Outcomes:
    """The delayed outcomes of a stay under ``care``."""
    pd = death_probability(p, s, care.treatment_h)
    confirmed = np.where(p.septic, np.minimum(np.fmax(p.onset_h, p.infection_h + 24.0), p.discharge_h), np.nan)
    return Outcomes(
        sepsis=p.septic, onset_h=p.onset_h, confirmed_h=confirmed, discharge_h=p.discharge_h,
        died=p.u_death < pd, p_death=pd,
    )


def true_effect(p: Patients, s: SimSettings, care: Care, shift_h: float | F) -> float:
    """The simulator's true effect on mortality of giving antibiotics ``shift_h`` hours earlier (scalar, or
    per patient) to the septic patients: mean P(death) under ``care`` minus under the shifted times,
    over septic patients (a positive number is lives saved per septic patient)."""
    septic = p.septic
    if not septic.any():
        return 0.0
    base = death_probability(p, s, care.treatment_h)
    shifted = death_probability(p, s, care.treatment_h - shift_h)
    return float(np.mean((base - shifted)[septic]))
