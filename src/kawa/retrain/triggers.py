"""Loop inputs from monitoring's matured performance: ``PerformanceDrop`` and ``Outcomes`` (pure, no I/O).

The monitor writes one ``kawa.monitor.performance`` event per matured cohort each time the cohort grows (model
version, arm, prediction-time bucket; ``n`` matured decisions; every metric with its interval).
:class:`PerformanceTriggers` folds them, in log order, into the loop's events:

- **Outcomes**: the growth of ``n`` of each cohort of the serving model (the arm-less decisions and the
  ``champion`` arm's; shadow scores and a canary's candidate are not the production volume), one event per
  performance event that grew a cohort, with the growth as ``count``;
- **PerformanceDrop**: for each version, the earliest cohort is the reference; a later cohort's metric
  (``performance_metric``, e.g. AUROC; for Brier lower is better) gives ``drop = reference - current`` and the
  lower end of its interval, ``drop - z·sqrt(se_ref² + se_cur²)`` with each ``se`` read from its interval's
  half-width. ``decide`` triggers on ``drop >= δ`` with a lower end above 0.

Event ids derive from the performance event's id, so a restarted controller that re-reads the topic produces
the same events, which ``decide`` recognises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from kawa.retrain import decide as d

__all__ = ["PerformanceTriggers", "drop_of"]

_SERVING_ARMS = ("", "champion")


def _se(metric: Mapping[str, Any]) -> float | None:
    try:
        est, low, high = float(metric["estimate"]), float(metric["low"]), float(metric["high"])
        level = float(metric.get("level", 0.95))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(x) for x in (est, low, high)) or not 0 < level < 1 or high < low:
        return None
    return (high - low) / (2 * NormalDist().inv_cdf(0.5 + level / 2))


def drop_of(reference: Mapping[str, Any], current: Mapping[str, Any], *, higher_is_better: bool = True,
            level: float = 0.95) -> tuple[float, float] | None:
    """``(drop, lower)`` of ``current`` against ``reference`` (each ``{estimate, low, high, level}``), or None
    when either has no finite interval."""  # fmt: skip
    se_r, se_c = _se(reference), _se(current)
    if se_r is None or se_c is None:
        return None
    drop = float(reference["estimate"]) - float(current["estimate"])
    drop = drop if higher_is_better else -drop
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return drop, drop - z * math.sqrt(se_r**2 + se_c**2)


@dataclass
class PerformanceTriggers:
    """Folds ``kawa.monitor.performance`` events of ``model`` into ``Outcomes`` and ``PerformanceDrop`` events."""

    model: str
    metric: str = "auroc"
    drops: bool = True
    _n: dict[tuple[int, str, float], int] = field(default_factory=dict)
    _reference: dict[int, tuple[float, Mapping[str, Any]]] = field(default_factory=dict)

    def on_event(self, id: str, at: float, data: Mapping[str, Any]) -> list[d.Event]:
        if data.get("model") != self.model:
            return []
        cohort = data.get("cohort") or {}
        arm = str(cohort.get("arm") or "")
        if arm not in _SERVING_ARMS:
            return []
        try:
            version, start, n = int(data["version"]), float(cohort["start"]), int(data["n"])
        except (KeyError, TypeError, ValueError):
            return []
        out: list[d.Event] = []
        key = (version, arm, start)
        grew = n - self._n.get(key, 0)
        if grew > 0:
            self._n[key] = n
            out.append(d.Outcomes(f"outcomes-{id}", at, count=grew))
        metric = (data.get("metrics") or {}).get(self.metric)
        if not isinstance(metric, Mapping) or _se(metric) is None:
            return out
        ref = self._reference.get(version)
        if ref is None or start <= ref[0]:
            self._reference[version] = (start, metric)  # the earliest cohort (its latest, largest state)
            return out
        change = drop_of(ref[1], metric, higher_is_better=self.metric != "brier")
        if self.drops and change is not None and change[0] > 0:  # a rise is no trigger: not worth a record
            out.append(d.PerformanceDrop(f"drop-{id}", at, drop=change[0], lower=change[1]))
        return out
