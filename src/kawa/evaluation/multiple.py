"""Corrections for several always-valid p-values (several metrics or challengers).

Always-valid p-values of different metrics on the same units are dependent in unknown ways, so only procedures
valid under arbitrary dependence are offered: Bonferroni (family-wise error) and Benjamini-Yekutieli (false
discovery rate). Benjamini-Hochberg assumes independence or positive dependence and is deliberately absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.sequential import FloatArray


@dataclass(frozen=True)
class Correction:
    method: str
    adjusted: tuple[float, ...]
    rejected: tuple[bool, ...]


def _check(p_values: Sequence[float], alpha: float) -> FloatArray:
    p: FloatArray = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise EvaluationError("give one or more p-values, each between 0 and 1")
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha must be between 0 and 1, got {alpha}")
    return p


def bonferroni(p_values: Sequence[float], alpha: float) -> Correction:
    """Family-wise error ≤ alpha under any dependence: reject where ``m·p ≤ alpha``."""
    p = _check(p_values, alpha)
    adj = np.minimum(1.0, p * p.size)
    return Correction("bonferroni", tuple(float(v) for v in adj), tuple(bool(v) for v in adj <= alpha))


def benjamini_yekutieli(p_values: Sequence[float], alpha: float) -> Correction:
    """False discovery rate ≤ alpha under any dependence (Benjamini & Yekutieli 2001): BH with ``alpha / Σ 1/i``."""
    p = _check(p_values, alpha)
    m = p.size
    c_m = float(np.sum(1.0 / np.arange(1, m + 1)))
    order = np.argsort(p)
    ranked = p[order] * m * c_m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.empty(m)
    adj[order] = np.minimum(1.0, ranked)
    return Correction("benjamini-yekutieli", tuple(float(v) for v in adj), tuple(bool(v) for v in adj <= alpha))
