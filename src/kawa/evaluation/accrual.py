"""Maturity-aware accrual: a unit counts only once its outcome window has closed.

With delayed labels (sepsis within 48 h, a chargeback within 60 days), a unit decided at ``t`` has a known outcome
only at ``t + window``. Counting it earlier would count "no event yet" as "no event" and bias every arm toward the
arm with the youngest units. At a look at time ``T`` a unit counts iff ``t + window ≤ T``; its outcome is the event
observed within ``[t, t + window]`` — an event after the window is outside the metric's definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.sequential import ArrayLike

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Accrual:
    """``counts[i]``: unit i is mature at the look; ``event[i]``: its outcome occurred within its window
    (only meaningful where ``counts``)."""

    counts: BoolArray
    event: BoolArray

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def matured(decision_times: ArrayLike, outcome_times: ArrayLike, look_time: float,
            maturity_window_s: float) -> Accrual:
    """Which units count at ``look_time`` and which had their event. ``outcome_times`` is NaN where no outcome
    has been recorded."""
    t = np.asarray(decision_times, dtype=float)
    o = np.asarray(outcome_times, dtype=float)
    if t.shape != o.shape:
        raise EvaluationError(f"give one outcome time (NaN for none) per decision: {t.shape} decisions, "
                              f"{o.shape} outcome times")
    if np.any(np.isnan(t)):
        raise EvaluationError("every decision needs a decision time")
    if not maturity_window_s >= 0:
        raise EvaluationError("the maturity window must be zero or more seconds")
    with np.errstate(invalid="ignore"):
        if np.any(o < t):
            raise EvaluationError("an outcome is timed before its decision; check the clocks or the join key")
        counts = t + maturity_window_s <= look_time
        event = counts & (o <= t + maturity_window_s) & (o <= look_time)
    return Accrual(counts, event)
