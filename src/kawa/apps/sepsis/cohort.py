"""The simulated patients: who is admitted when, for how long, where, how frail, who gets an infection and
who develops sepsis — one frozen table of numpy columns (:class:`Patients`), drawn from one seed.

The Sepsis-3 ground truth is computed, not assigned: a septic course raises the patient's (noise-free,
untreated) SOFA; onset is the first hour within [suspected infection - 48 h, + 24 h] where SOFA is at
least 2 above the patient's own baseline. Onset depends on the disease, not on when antibiotics came, so
labels are the same in every arm of an experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.latent import latent_state
from kawa.apps.sepsis.physiology import deterioration, sofa
from kawa.apps.sepsis.settings import SimSettings

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Patients:
    """One row per patient (index = patient number). Times in hours from the epoch; NaN = does not apply."""

    admit_h: F
    discharge_h: F
    icu: B
    frailty: F
    infected: B
    infection_h: F
    septic_course: B
    det_start_h: F
    det_ramp_h: F
    det_peak: F
    fever_sign: F
    leukopenic: B
    epidemic_severity: F
    w_resp: F
    w_cv: F
    hr0: F
    rr0: F
    temp0: F
    sbp0: F
    dbp0: F
    spo20: F
    wbc0: F
    lac0: F
    cr0: F
    bili0: F
    plt0: F
    circadian_phase: F
    interval_h: F
    phase_h: F
    lab_phase_h: F
    u_death: F
    onset_h: F
    """Sepsis-3 onset (ground truth), NaN when the patient never meets it."""

    def __len__(self) -> int:
        return len(self.admit_h)

    @property
    def septic(self) -> B:
        return ~np.isnan(self.onset_h)


def _admissions(s: SimSettings, rng: np.random.Generator) -> tuple[F, F]:
    """Admission and discharge times of ``s.patients`` patients: admitted in [0, hours) (cohort), or any
    stay overlapping [0, hours) with admissions at a constant rate (census)."""

    def los_draw(n: int) -> F:
        return s.los_median_h * np.exp(s.los_sigma * rng.standard_normal(n))

    if s.mode == "cohort":
        admit = np.sort(rng.uniform(0.0, s.hours, s.patients))
        return admit, admit + los_draw(s.patients)
    horizon = s.los_median_h * float(np.exp(4 * s.los_sigma))
    admit_parts: list[F] = []
    los_parts: list[F] = []
    got = 0
    while got < s.patients:
        n = 2 * (s.patients - got) + 16
        a = rng.uniform(-horizon, s.hours, n)
        los = los_draw(n)
        keep = a + los > 0
        admit_parts.append(a[keep])
        los_parts.append(los[keep])
        got += int(keep.sum())
    admit = np.concatenate(admit_parts)[: s.patients]
    los = np.concatenate(los_parts)[: s.patients]
    order = np.argsort(admit, kind="stable")
    return admit[order], (admit + los)[order]


def make_patients(s: SimSettings) -> Patients:
    """Draw the patient table for ``s`` (deterministic in ``s.seed``)."""
    rng = np.random.default_rng([s.seed, 1])
    n = s.patients
    admit, discharge = _admissions(s, rng)
    epi = s.epidemic
    after = admit >= epi.start_h if epi is not None else np.zeros(n, dtype=bool)
    frailty = rng.standard_normal(n) + (epi.frailty_shift if epi is not None else 0.0) * after
    icu = rng.random(n) < s.icu_share
    mult = np.where(after, epi.infection_multiplier if epi is not None else 1.0, 1.0)
    u = rng.random(n)
    septic_course = u < s.sepsis_share
    infected = septic_course | (u < np.minimum(1.0, s.infection_share * mult))

    los = discharge - admit
    det_start = np.where(septic_course, admit + rng.uniform(1.0, 1.0 + np.maximum(2.0, 0.6 * los)), np.nan)
    ramp = np.where(septic_course, rng.uniform(10.0, 30.0, n), np.nan)
    peak = np.where(septic_course, 0.55 + rng.gamma(2.0, 0.2, n), np.nan)
    discharge = np.where(septic_course, np.maximum(discharge, det_start + ramp + 48.0), discharge)
    onset_guess = det_start + ramp * 0.45 / peak
    infection_h = np.where(
        septic_course,
        onset_guess + 3.0 * rng.standard_normal(n),
        np.where(infected, admit + rng.uniform(0.0, 0.5, n) * (discharge - admit), np.nan),
    )
    epidemic_severity = np.zeros(n)
    if epi is not None:
        hit = ~septic_course & (rng.random(n) < epi.affected_share)
        epidemic_severity = np.where(hit, rng.uniform(0.4, 1.6, n), 0.0)

    ward_lo, ward_hi = s.vitals_every_min
    interval_min = np.where(icu, ward_lo, rng.uniform(ward_lo, ward_hi, n))
    p = Patients(
        admit_h=admit,
        discharge_h=discharge,
        icu=icu,
        frailty=frailty,
        infected=infected,
        infection_h=infection_h,
        septic_course=septic_course,
        det_start_h=det_start,
        det_ramp_h=ramp,
        det_peak=peak,
        fever_sign=np.where(rng.random(n) < 0.85, 1.0, -0.7),
        leukopenic=rng.random(n) < 0.1,
        epidemic_severity=epidemic_severity,
        w_resp=rng.uniform(0.0, 0.95, n),
        w_cv=rng.uniform(0.0, 0.95, n),
        hr0=78 + 0 * frailty + 8 * rng.standard_normal(n),
        rr0=15.5 + 0.4 * frailty + 1.3 * rng.standard_normal(n),
        temp0=36.8 + 0.25 * rng.standard_normal(n),
        sbp0=125 - 5 * frailty + 13 * rng.standard_normal(n),
        dbp0=72 + 8 * rng.standard_normal(n),
        spo20=np.minimum(99.5, 97.0 - 4.5 * frailty + 1.1 * rng.standard_normal(n)),
        wbc0=np.maximum(3.5, 7.5 + 1.7 * rng.standard_normal(n)),
        lac0=1.1 * np.exp(0.25 * rng.standard_normal(n)),
        cr0=0.9 * np.exp(0.1 * frailty + 0.25 * rng.standard_normal(n)),
        bili0=0.6 * np.exp(0.3 * rng.standard_normal(n)),
        plt0=250 * np.exp(0.25 * rng.standard_normal(n)),
        circadian_phase=rng.uniform(0, 2 * np.pi, n),
        interval_h=interval_min / 60.0,
        phase_h=rng.uniform(0.0, 1.0, n) * interval_min / 60.0,
        lab_phase_h=rng.uniform(0.0, s.labs_every_h, n),
        u_death=rng.random(n),
        onset_h=np.full(n, np.nan),
    )
    return _with_onset(p)


def _with_onset(p: Patients) -> Patients:
    """Fill ``onset_h``: the Sepsis-3 rule on the hourly noise-free, untreated SOFA (see module doc)."""
    idx = np.flatnonzero(p.septic_course)
    if len(idx) == 0:
        return p
    lo = np.maximum(p.admit_h[idx], p.infection_h[idx] - 48.0)
    hi = np.minimum(p.discharge_h[idx], p.infection_h[idx] + 24.0)
    steps = np.maximum(0, np.floor(hi - lo).astype(np.int64) + 1)
    rows = np.repeat(idx, steps)
    starts = np.repeat(lo, steps)
    offs = np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)
    t = starts + offs
    none = np.full(len(rows), np.nan)
    d = deterioration(t, p.det_start_h[rows], p.det_ramp_h[rows], p.det_peak[rows], none)
    sick = latent_state(p, rows, t, d)
    well = latent_state(p, rows, t, np.zeros(len(rows)))
    rise = _sofa_of(sick) - _sofa_of(well)
    first = np.full(len(p), np.inf)
    np.minimum.at(first, rows[rise >= 2], t[rise >= 2])
    onset = np.where(np.isfinite(first), first, np.nan)
    return replace(p, onset_h=onset)


def _sofa_of(v: dict[str, F]) -> I:
    return sofa(v["spo2"], v["o2_flow"], v["plt"], v["bili"], v["map"], v["gcs"], v["cr"])
