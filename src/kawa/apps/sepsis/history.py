"""The baselines measured honestly before the demo starts: NEWS2, qSOFA and SIRS on a matured, simulated
history, as :class:`~kawa.apps.sepsis.events.MeasuredRule` rows for the board.

A live day cannot be measured on the day: a hit is known only once onset is confirmed (a day or more later).
So the board's comparison comes from a separate simulated history — whole stays, every outcome known — run
through the same features, scores, alert policy and metrics as the app (:func:`kawa.apps.sepsis.train.
side_by_side`). Pure: no I/O.
"""

from __future__ import annotations

import math
import time

import numpy as np

from kawa.apps.sepsis.app_settings import SepsisSettings
from kawa.apps.sepsis.events import MeasuredRule
from kawa.apps.sepsis.settings import SimSettings

__all__ = ["measure_history"]

HISTORY_HOURS = 48.0


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


def measure_history(s: SepsisSettings, admissions: int | None = None) -> list[MeasuredRule]:
    """The bedside rules (the app's NEWS2 threshold, NEWS2 >= 5, qSOFA >= 2, SIRS >= 2) measured on
    ``admissions`` (default ``s.history_admissions``) simulated admissions over 48 h, followed to discharge."""
    from kawa.apps.sepsis.features import batch_features
    from kawa.apps.sepsis.pipeline import score_columns
    from kawa.apps.sepsis.sim import simulate
    from kawa.apps.sepsis.train import hourly_rows, side_by_side

    n = s.history_admissions if admissions is None else admissions
    sim = simulate(SimSettings(patients=n, hours=HISTORY_HOURS, mode="cohort", seed=s.sim.seed + 1000))
    rows = hourly_rows(sim)
    n2, q, si = (c.astype(np.float64) for c in score_columns(batch_features(sim.observations, rows)))
    rules = {f"NEWS2 >= {s.threshold:g}": (n2, s.threshold), "NEWS2 >= 5": (n2, 5.0), "qSOFA >= 2": (q, 2.0),
             "SIRS >= 2": (si, 2.0)}  # fmt: skip
    measured = side_by_side(sim, rules, s, rows)
    cohort = f"simulated history: {n:,} admissions over {HISTORY_HOURS:g} h, followed to discharge"
    now = time.time()
    return [
        MeasuredRule(
            rule=name, ppv=_num(m["ppv"]), sensitivity=_num(m["sensitivity"]),
            lead_time_h=_num(m["lead_time_h_median"]), gain_vs_screen_h=_num(m["gain_vs_screen_h_median"]),
            alerts_per_100_patient_days=_num(m["alerts_per_100_patient_days"]), utility=_num(m["utility"]),
            alerts=int(m["alerts"]), septic=int(m["septic"]), cohort=cohort, time=now,
        )
        for name, m in measured.items()
    ]
