"""Seeing the epidemic: the inputs and the alert rate, hour by hour, against a reference window — with the
monitoring capability's sketches and drift statistics (:mod:`kawa.monitor`). Pure: no I/O.

:func:`hourly_shift` takes a simulation's hourly rows (each patient's last vital set of every hour), builds
the reference sketch of each watched feature from ``[t0, reference_end_h)``, and for every later hour
compares that hour's values with it (KS statistic and p-value, PSI) and counts the alerts the policy raises
per 100 patients. :func:`first_shift` is the first hour a feature's KS p-value falls below ``alpha``
(a Bonferroni-style budget: a small ``alpha`` over all hours and features keeps false alarms rare, which the
test checks on a run without an epidemic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kawa.apps.sepsis.alerts import AlertPolicy, run
from kawa.apps.sepsis.sim import Simulation

__all__ = ["HourShift", "first_shift", "hourly_shift"]

WATCHED = ("rr_last", "spo2_last", "o2_flow_last", "hr_last")


@dataclass(frozen=True)
class HourShift:
    """One hour against the reference: per feature (KS statistic, KS p-value, PSI); alerts per 100 patients."""

    hour: int
    drift: dict[str, tuple[float, float, float]]
    alerts_per_100: float
    patients: int


def hourly_shift(sim: Simulation, reference_end_h: float, policy: AlertPolicy,
                 watched: Sequence[str] = WATCHED) -> tuple[float, list[HourShift]]:  # fmt: skip
    """The reference alert rate (per 100 patient-hours) and every later hour's shift (see the module doc)."""
    from kawa.apps.sepsis.features import batch_features, column
    from kawa.apps.sepsis.pipeline import score_columns
    from kawa.apps.sepsis.train import hourly_rows
    from kawa.monitor import compare, numeric_reference

    rows = hourly_rows(sim)
    obs = sim.observations
    x = batch_features(obs, rows)
    t = obs.time_h[rows]
    hour = np.floor(t).astype(np.int64)
    pat = obs.patient[rows].astype(np.int64)
    news2 = score_columns(x)[0].astype(float)
    order = np.argsort(t, kind="stable")
    alerted = np.zeros(len(rows), dtype=bool)
    verdicts = run(policy, zip(pat[order].tolist(), t[order].tolist(), news2[order].tolist(), strict=True))
    alerted[order] = [v.alert for _p, _t, v in verdicts]
    ref = t < reference_end_h
    sketches = {name: numeric_reference(x[ref, column(name)]) for name in watched}

    def rate(sel: np.ndarray) -> float:
        return 100.0 * float(alerted[sel].sum()) / max(1, int(sel.sum()))

    out = []
    for h in range(math.ceil(reference_end_h), int(hour.max()) + 1):
        here = hour == h
        if not here.any():
            continue
        drift = {}
        for name, sketch in sketches.items():
            d = compare(sketch, sketch.empty().add(x[here, column(name)]))
            drift[name] = (float(d.ks or 0.0), float(d.ks_p if d.ks_p is not None else 1.0), d.psi)
        out.append(HourShift(h, drift, rate(here), int(here.sum())))
    return rate(ref), out


def first_shift(hours: Sequence[HourShift], feature: str, alpha: float) -> int | None:
    """The first hour whose ``feature`` KS p-value is below ``alpha`` (None: none)."""
    return next((h.hour for h in hours if h.drift[feature][1] < alpha), None)
