"""The simulated physiology: counter-based noise, the deterioration curve, vitals and labs from the latent
state, and SOFA.

Noise is a pure function of ``(seed, patient, slot, stream)`` (a SplitMix64 hash, then Box-Muller), not a
draw from a sequential generator: the value of a measurement does not depend on which window, block or
order it was generated in, so a day generated in hourly blocks equals the day generated at once, and a
rerun with different antibiotic times changes nothing before the earliest changed treatment.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform(seed: int, patient: I, slot: I, stream: int) -> F:
    """U(0, 1) (never 0) for each (patient, slot), independent across ``stream``s and seeds."""
    with np.errstate(over="ignore"):
        key = np.uint64(seed & 0xFFFFFFFF) * _GOLD + np.uint64(stream) * _M1
        x = _mix(patient.astype(np.uint64) * _GOLD + key)
        x = _mix(x ^ (slot.astype(np.uint64) * _M2 + _GOLD))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / 9007199254740992.0


def normal(seed: int, patient: I, slot: I, stream: int) -> F:
    """N(0, 1) for each (patient, slot), by Box-Muller on two hashed uniforms."""
    u1 = uniform(seed, patient, slot, 2 * stream)
    u2 = uniform(seed, patient, slot, 2 * stream + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def deterioration(t: F, start: F, ramp: F, peak: F, treated: F, recovery_h: float = 18.0) -> F:
    """The septic deterioration at times ``t`` (0 = baseline, ~1 = shock): a linear ramp from ``start`` to
    ``peak`` over ``ramp`` hours; after antibiotics at ``treated`` it decays from where it was with time
    constant ``recovery_h`` — so earlier antibiotics mean a lower peak. ``start`` NaN: never deteriorates;
    ``treated`` NaN: never treated."""
    untreated = peak * np.clip((t - start) / ramp, 0.0, 1.0)
    at_tx = peak * np.clip((treated - start) / ramp, 0.0, 1.0)
    after = np.where(t > treated, at_tx * np.exp(-(t - treated) / recovery_h), np.inf)
    d = np.minimum(untreated, after)
    return np.nan_to_num(d, nan=0.0, posinf=0.0)


def inflammation(t: F, infection_h: F, width_h: float = 24.0) -> F:
    """A non-septic infection's inflammatory bump (0..1), peaking 6 h after suspicion."""
    z = (t - infection_h - 6.0) / width_h
    return np.nan_to_num(np.exp(-0.5 * z * z), nan=0.0)


def acvpu_from_gcs(gcs: F) -> F:
    """ACVPU from GCS: 15 Alert, 13-14 new Confusion, 9-12 Voice, 6-8 Pain, 3-5 Unresponsive."""
    return np.select([gcs >= 15, gcs >= 13, gcs >= 9, gcs >= 6], [0.0, 1.0, 2.0, 3.0], 4.0)


def fio2(o2_flow: F) -> F:
    """Inspired oxygen fraction from nasal/mask flow (the usual 0.21 + 0.04 per L/min, capped at 0.6)."""
    return np.minimum(0.21 + 0.04 * o2_flow, 0.6)


def sofa(spo2: F, o2_flow: F, platelets: F, bilirubin: F, map_: F, gcs: F, creatinine: F) -> I:
    """SOFA (0-22 here: no vasopressors, so cardiovascular is 0-1), respiration from SpO2/FiO2
    (S/F < 400, 315, 235, 150 for 1-4 points, the usual P/F mapping)."""
    sf = spo2 / fio2(o2_flow)
    resp = np.select([sf < 150, sf < 235, sf < 315, sf < 400], [4, 3, 2, 1], 0)
    coag = np.select([platelets < 20, platelets < 50, platelets < 100, platelets < 150], [4, 3, 2, 1], 0)
    liver = np.select([bilirubin >= 12, bilirubin >= 6, bilirubin >= 2, bilirubin >= 1.2], [4, 3, 2, 1], 0)
    cardio = (map_ < 70).astype(np.int64)
    cns = np.select([gcs < 6, gcs < 10, gcs < 13, gcs < 15], [4, 3, 2, 1], 0)
    renal = np.select([creatinine >= 5, creatinine >= 3.5, creatinine >= 2, creatinine >= 1.2], [4, 3, 2, 1], 0)
    total: I = (resp + coag + liver + cardio + cns + renal).astype(np.int64)
    return total
