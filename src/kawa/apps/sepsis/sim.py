"""A seeded, vectorised hospital: patients, vitals every 15-60 min, irregular labs, Sepsis-3 ground truth,
clinicians, outcomes — as numpy columns, and as a stream in event-time order.

>>> sim = simulate(SimSettings(patients=500))
>>> sim.observations.code, sim.outcomes.died, true_effect(sim.patients, sim.settings, sim.care, 5.0)

:func:`simulate` returns the whole window; :func:`iter_blocks` yields the same rows block by block (each
block sorted by time, patient, code), so a day can be streamed without holding it; :func:`iter_observations`
yields single rows. Measurement noise is a hash of (seed, patient, slot), so the rows do not depend on the
blocking, and a rerun with alerts (``simulate(s, alert_h=...)``) differs from the run without only after
antibiotics changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.care import Care, Outcomes, outcomes, respond, true_effect
from kawa.apps.sepsis.codes import CODINGS, Code
from kawa.apps.sepsis.cohort import Patients, make_patients
from kawa.apps.sepsis.latent import latent_state
from kawa.apps.sepsis.physiology import acvpu_from_gcs, deterioration, normal, uniform
from kawa.apps.sepsis.settings import SimSettings

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741

__all__ = ["Observation", "Observations", "Simulation", "iter_blocks", "iter_observations", "simulate",
           "true_effect"]

_SECOND = 1.0 / 3600.0
_LAB_EXTRA_SLOT = 1 << 40  # the slot of the draw at suspected infection (routine draws count from 0)


@dataclass(frozen=True)
class Observations:
    """The observations table, sorted by (time, patient, code)."""

    patient: npt.NDArray[np.int32]
    time_h: F
    code: npt.NDArray[np.int8]
    value: F

    def __len__(self) -> int:
        return len(self.time_h)

    def take(self, sel: npt.NDArray[np.bool_] | I) -> Observations:
        return Observations(self.patient[sel], self.time_h[sel], self.code[sel], self.value[sel])

    @staticmethod
    def concat(parts: list[Observations]) -> Observations:
        if not parts:
            return _empty()
        return Observations(
            np.concatenate([x.patient for x in parts]), np.concatenate([x.time_h for x in parts]),
            np.concatenate([x.code for x in parts]), np.concatenate([x.value for x in parts]),
        )


class Observation(NamedTuple):
    """One observation: patient number, time (hours from the epoch), :class:`Code`, value."""

    patient: int
    time_h: float
    code: int
    value: float


@dataclass(frozen=True)
class Simulation:
    settings: SimSettings
    patients: Patients
    care: Care
    outcomes: Outcomes
    observations: Observations


def _empty() -> Observations:
    return Observations(np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.int8), np.zeros(0))


def _grid(first: F, every: F, lo: F, hi: F) -> tuple[I, I]:
    """Rows and slot numbers k of the times ``first + k·every`` (k >= 0) inside [lo, hi)."""
    k0 = np.maximum(0.0, np.ceil((lo - first) / every))
    k1 = np.ceil((hi - first) / every)
    n = np.maximum(0, (k1 - k0)).astype(np.int64)
    rows = np.repeat(np.arange(len(first), dtype=np.int64), n)
    k = np.repeat(k0.astype(np.int64), n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    return rows, k


def _epidemic(p: Patients, s: SimSettings, rows: I, t: F) -> tuple[F | None, F | None]:
    e = s.epidemic
    if e is None:
        return None, None
    load = np.clip((t - e.start_h) / e.ramp_h, 0.0, 1.0) * p.epidemic_severity[rows]
    return e.rr_rise * load, e.spo2_drop * load


def _to_second(t: F) -> F:
    """Times on whole seconds (what a FHIR dateTime carries, so the wire format round-trips exactly)."""
    return np.round(t * 3600.0) / 3600.0


def _round(code: Code, v: F) -> F:
    return np.round(v, CODINGS[code].decimals)


def observations(
    p: Patients, s: SimSettings, care: Care, t0: float, t1: float, only: npt.NDArray[np.bool_] | None = None
) -> Observations:
    """Every observation with time in [t0, t1) (and inside each stay), sorted by (time, patient, code);
    ``only``: of these patients alone (the others' rows are left out, the rest is unchanged)."""
    lo = np.maximum(p.admit_h, t0)
    hi = np.minimum(p.discharge_h, t1)
    if only is not None:
        hi = np.where(only, hi, lo)
    parts: list[tuple[I, F, int, F]] = []
    seed = s.seed

    rows, k = _grid(p.admit_h + p.phase_h, p.interval_h, lo - _SECOND, hi + _SECOND)
    t = _to_second(p.admit_h[rows] + p.phase_h[rows] + k * p.interval_h[rows])
    inside = (t >= lo[rows]) & (t < hi[rows])  # decided on the recorded (rounded) time
    rows, k, t = rows[inside], k[inside], t[inside]
    d = deterioration(t, p.det_start_h[rows], p.det_ramp_h[rows], p.det_peak[rows], care.treatment_h[rows])
    v = latent_state(p, rows, t, d, *_epidemic(p, s, rows, t))
    def n(stream: int) -> F:
        return normal(seed, rows, k, stream)

    def present(code: Code, share: float) -> npt.NDArray[np.bool_]:
        return uniform(seed, rows, k, 100 + int(code)) < share

    keep = 1.0 - s.missing_share
    sbp = _round(Code.SBP, v["sbp"] + 6.0 * n(3))
    dbp = _round(Code.DBP, np.minimum(v["dbp"] + 5.0 * n(4), sbp - 10))
    gcs: F = np.clip(np.round(v["gcs"] - 0.5 * np.maximum(0.0, n(6) - 2.0)), 3.0, 15.0).astype(np.float64)
    vitals = {
        Code.HR: (v["hr"] + 4.0 * n(0), keep),
        Code.RR: (v["rr"] + 1.0 * n(1), keep),
        Code.TEMP: (v["temp"] + 0.2 * n(2), s.temp_share),
        Code.SBP: (sbp, keep),
        Code.DBP: (dbp, keep),
        Code.MAP: ((sbp + 2 * dbp) / 3.0, keep),
        Code.SPO2: (np.minimum(100.0, v["spo2"] + 1.0 * n(5)), keep),
        Code.O2_FLOW: (v["o2_flow"], 1.0),
        Code.ACVPU: (acvpu_from_gcs(gcs), 1.0),
        Code.GCS: (gcs, s.gcs_share),
    }
    for code, (val, share) in vitals.items():
        m = present(code, share) if share < 1.0 else np.ones(len(rows), dtype=bool)
        parts.append((rows[m], t[m], int(code), _round(code, val[m])))

    lrows, lk = _grid(p.admit_h + p.lab_phase_h, np.full(len(p), s.labs_every_h), lo - _SECOND, hi + _SECOND)
    lt = _to_second(p.admit_h[lrows] + p.lab_phase_h[lrows] + lk * s.labs_every_h)
    inside = (lt >= lo[lrows]) & (lt < hi[lrows])
    lrows, lk, lt = lrows[inside], lk[inside], lt[inside]
    lac_share = uniform(seed, lrows, lk, 200) < s.lactate_share
    inf_t = _to_second(p.infection_h)
    xrows = np.flatnonzero(p.infected & (inf_t >= lo) & (inf_t < hi))
    lrows = np.concatenate([lrows, xrows])
    lk = np.concatenate([lk, np.full(len(xrows), _LAB_EXTRA_SLOT, dtype=np.int64)])
    lt = np.concatenate([lt, inf_t[xrows]])
    lac_share = np.concatenate([lac_share, np.ones(len(xrows), dtype=bool)])
    ld = deterioration(lt, p.det_start_h[lrows], p.det_ramp_h[lrows], p.det_peak[lrows], care.treatment_h[lrows])
    lv = latent_state(p, lrows, lt, ld)
    def ln(stream: int) -> F:
        return normal(seed, lrows, lk, stream)

    labs = {
        Code.WBC: (np.maximum(0.3, lv["wbc"] + 1.0 * ln(10)), None),
        Code.LACTATE: (np.maximum(0.3, lv["lac"] + 0.2 * ln(11)), lac_share),
        Code.CREATININE: (lv["cr"] * np.exp(0.05 * ln(12)), None),
        Code.BILIRUBIN: (lv["bili"] * np.exp(0.08 * ln(13)), None),
        Code.PLATELETS: (lv["plt"] * np.exp(0.06 * ln(14)), None),
    }
    for code, (val, mask) in labs.items():
        m = np.ones(len(lrows), dtype=bool) if mask is None else mask
        parts.append((lrows[m], lt[m], int(code), _round(code, val[m])))

    pat = np.concatenate([x[0] for x in parts]).astype(np.int32)
    time_h = np.concatenate([x[1] for x in parts])
    code_col = np.concatenate([np.full(len(x[0]), x[2], dtype=np.int8) for x in parts])
    value = np.concatenate([x[3] for x in parts])
    order = np.lexsort((code_col, pat, time_h))
    return Observations(pat[order], time_h[order], code_col[order], value[order])


def window(s: SimSettings, p: Patients) -> tuple[float, float]:
    """The observed window: [0, hours) for a census, the whole stays for a cohort."""
    if s.mode == "cohort":
        return float(np.min(p.admit_h)), float(np.max(p.discharge_h)) + 1.0
    return 0.0, s.hours


def simulate(s: SimSettings, alert_h: F | None = None) -> Simulation:
    """The whole simulation for ``s``: patients, care (with alerts at ``alert_h`` per patient, NaN none),
    outcomes and every observation of the window."""
    p = make_patients(s)
    care = respond(p, s, alert_h)
    t0, t1 = window(s, p)
    return Simulation(s, p, care, outcomes(p, s, care), observations(p, s, care, t0, t1))


def iter_blocks(
    p: Patients,
    s: SimSettings,
    care: Care | Callable[[], Care],
    block_h: float = 1.0,
    t0: float | None = None,
    t1: float | None = None,
) -> Iterator[Observations]:
    """The window's observations in blocks of ``block_h`` hours, in event-time order; their concatenation
    equals :func:`observations` over the window.

    ``care`` may be a callable, asked before each block: a live loop passes
    ``lambda: respond(p, s, alerts_so_far)`` so the alerts it raised while reading one block bring
    antibiotics (and recovery) into the next ones — exact whenever antibiotics come at least a block
    after the alert."""
    w0, w1 = window(s, p)
    lo = w0 if t0 is None else t0
    hi = w1 if t1 is None else t1
    edges = np.append(np.arange(lo, hi, block_h), hi)
    for a, b in itertools.pairwise(edges):
        yield observations(p, s, care() if callable(care) else care, float(a), float(b))


def iter_observations(blocks: Iterator[Observations] | Observations) -> Iterator[Observation]:
    """Single observations, in event-time order, from a table or from :func:`iter_blocks`."""
    for block in [blocks] if isinstance(blocks, Observations) else blocks:
        for row in zip(block.patient.tolist(), block.time_h.tolist(), block.code.tolist(), block.value.tolist(),
                       strict=True):
            yield Observation(*row)
