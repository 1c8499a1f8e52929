"""Sequential sample-ratio-mismatch (SRM) test: a hard gate before any effect is trusted.

Lindon & Malek (2022), "Anytime-valid inference for multinomial count data": under the planned split ``p₀`` the
assignment counts ``x`` (n units over k arms) are multinomial. Against a Dirichlet(``c·p₀``) mixture of
alternatives the Bayes factor

    BF = Γ(c)/Γ(c+n) · Π Γ(c·p₀ᵢ + xᵢ)/Γ(c·p₀ᵢ) / Π p₀ᵢ^xᵢ

is a nonnegative martingale under the planned split, so ``p = min(1, 1/max BF)`` over the looks is an
always-valid p-value. Any look where ``p ≤ alpha_srm`` means the randomisation or the logging is broken and no effect
estimate from this experiment can be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln

from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.sequential import ArrayLike, FloatArray

DEFAULT_CONCENTRATION = 1000.0


def srm_log_bayes_factor(counts: ArrayLike, probs: Sequence[float],
                         concentration: float = DEFAULT_CONCENTRATION) -> FloatArray:
    """Log Bayes factor of "the split is not ``probs``" for counts over the last axis (broadcasts over runs)."""
    x = np.asarray(counts, dtype=float)
    p = np.asarray(probs, dtype=float)
    if x.shape[-1] != p.shape[0]:
        raise EvaluationError(f"SRM needs one count per arm: {x.shape[-1]} counts for {p.shape[0]} arms")
    if np.any(p <= 0) or abs(float(p.sum()) - 1.0) > 1e-9:
        raise EvaluationError("SRM needs the planned split as positive weights summing to 1")
    if np.any(x < 0):
        raise EvaluationError("SRM counts must not be negative")
    if not concentration > 0:
        raise EvaluationError("the SRM prior concentration must be positive")
    a = concentration * p
    n = x.sum(axis=-1)
    out: FloatArray = (gammaln(concentration) - gammaln(concentration + n)
                       + (gammaln(a + x) - gammaln(a)).sum(axis=-1) - (x * np.log(p)).sum(axis=-1))
    return out


def srm_p_value(counts: Sequence[int], probs: Sequence[float],
                concentration: float = DEFAULT_CONCENTRATION) -> float:
    """``min(1, 1/BF)`` at one look; the always-valid p-value is its running minimum over looks."""
    log_bf = float(srm_log_bayes_factor(counts, probs, concentration))
    return min(1.0, math.exp(-log_bf)) if log_bf < 700 else 0.0
