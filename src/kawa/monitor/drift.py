"""Drift statistics between a reference sketch and a live window sketch of the same layout.

Every statistic is a function of the two count vectors (missing values excluded; they have their own test).
The count functions take a reference vector ``(B,)`` or ``(R, B)`` and live counts ``(B,)`` or ``(R, B)`` and
work along the last axis, so calibration evaluates many bootstrap windows at once. With ``p`` the reference
and ``q`` the live bin proportions:

- **PSI** ``sum((q - p) * ln(q / p))`` with both proportions floored at :data:`PSI_FLOOR` (an empty bin would
  make it infinite); the textbook population stability index.
- **Jensen-Shannon distance** ``sqrt((KL(p || m) + KL(q || m)) / 2)`` with ``m = (p + q) / 2``, base 2, in [0, 1]
  (``scipy.spatial.distance.jensenshannon(p, q, base=2)``).
- **Normed Wasserstein** (numeric): the 1-Wasserstein distance between the two binned distributions with each
  bin's mass at its reference position (the mean of the reference values in the bin), divided by the reference
  standard deviation. So 0.5 reads "about half a reference standard deviation"; binning makes it a lower bound
  of the exact distance between the raw samples (mass inside a bin does not move).
- **KS** (numeric): the largest gap between the two binned CDFs, which is ``scipy.stats.ks_2samp``'s statistic
  on the samples expanded at their bin positions; its p-value is Smirnov's asymptotic one (``method="asymp"``).
- **Chi-square** (categorical, or any bins): Pearson's statistic of the 2 x B contingency table of reference
  and live counts, bins empty in both dropped, no continuity correction (``scipy.stats.chi2_contingency``).
  Its effect size is Cramer's V, ``sqrt(chi2 / N)`` for two rows.

**Exact mode.** When both sketches carry raw values (:class:`~kawa.monitor.sample.Sample`), :func:`compare`
computes KS and Wasserstein on them instead: the KS statistic is ``scipy.stats.ks_2samp(ref, live).statistic``
(its p-value the asymptotic one at the samples' sizes), the Wasserstein distance
``scipy.stats.wasserstein_distance(ref, live)``, normed as Evidently 0.7 norms it (divided by the reference
standard deviation floored at 0.001). PSI, JS and chi-square stay on the bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kawa.monitor import sample as raw
from kawa.monitor.errors import LayoutMismatch
from kawa.monitor.sketch import CategoricalSketch, FeatureSketch, NumericSketch

FloatArray = npt.NDArray[np.float64]
Counts = npt.ArrayLike

PSI_FLOOR = 1e-4


def _props(counts: Counts) -> FloatArray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    return c / np.where(total > 0, total, 1.0)


def psi(ref: Counts, live: Counts, floor: float = PSI_FLOOR) -> FloatArray:
    p = np.maximum(_props(ref), floor)
    q = np.maximum(_props(live), floor)
    return np.asarray(np.sum((q - p) * np.log(q / p), axis=-1))


def js_distance(ref: Counts, live: Counts) -> FloatArray:
    p, q = np.broadcast_arrays(_props(ref), _props(live))
    m = (p + q) / 2

    def kl(a: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * np.log2(a / np.where(m > 0, m, 1.0)), 0.0)
        return np.asarray(terms.sum(axis=-1))

    return np.asarray(np.sqrt(np.maximum((kl(p) + kl(q)) / 2, 0.0)))


def wasserstein(ref: Counts, live: Counts, positions: npt.ArrayLike) -> FloatArray:
    """The 1-Wasserstein distance with bin masses at ``positions`` (increasing); not normalised."""
    x = np.asarray(positions, dtype=np.float64)
    gaps = np.diff(x)
    cdf_gap = np.abs(np.cumsum(_props(ref), axis=-1) - np.cumsum(_props(live), axis=-1))[..., :-1]
    return np.asarray(np.sum(cdf_gap * gaps, axis=-1))


def ks_statistic(ref: Counts, live: Counts) -> FloatArray:
    gap = np.abs(np.cumsum(_props(ref), axis=-1) - np.cumsum(_props(live), axis=-1))
    return np.asarray(gap.max(axis=-1))


def ks_pvalue(d: float, n_ref: int, n_live: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as ``scipy.stats.ks_2samp(..., method="asymp")`` computes it."""
    from scipy.stats import kstwo

    if n_ref == 0 or n_live == 0:
        return 1.0
    m, n = sorted([float(n_ref), float(n_live)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


def chi2_statistic(ref: Counts, live: Counts) -> FloatArray:
    r, q = np.broadcast_arrays(np.asarray(ref, dtype=np.float64), np.asarray(live, dtype=np.float64))
    cols = r + q
    nr = r.sum(axis=-1, keepdims=True)
    nq = q.sum(axis=-1, keepdims=True)
    total = np.where(nr + nq > 0, nr + nq, 1.0)
    er = cols * nr / total
    eq = cols * nq / total
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = np.where(er > 0, (r - er) ** 2 / np.where(er > 0, er, 1.0), 0.0) + np.where(
            eq > 0, (q - eq) ** 2 / np.where(eq > 0, eq, 1.0), 0.0
        )
    return np.asarray(cells.sum(axis=-1))


def chi2_pvalue(stat: float, ref: Counts, live: Counts) -> float:
    from scipy.stats import chi2

    nonempty = int(np.count_nonzero(np.asarray(ref) + np.asarray(live)))
    dof = nonempty - 1
    return 1.0 if dof < 1 else float(chi2.sf(stat, dof))


def cramers_v(stat: float, n_ref: int, n_live: int) -> float:
    n = n_ref + n_live
    return math.sqrt(stat / n) if n > 0 else 0.0


@dataclass(frozen=True)
class MissingShift:
    """The share of missing values in the reference and the window, and a two-proportion z-test between them."""

    reference_share: float
    live_share: float
    z: float
    p_value: float

    @property
    def shift(self) -> float:
        return self.live_share - self.reference_share


def missing_shift(ref: FeatureSketch, live: FeatureSketch) -> MissingShift:
    n1, n2 = ref.total, live.total
    p1 = ref.missing / n1 if n1 else 0.0
    p2 = live.missing / n2 if n2 else 0.0
    pooled = (ref.missing + live.missing) / (n1 + n2) if n1 + n2 else 0.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / max(n1, 1) + 1 / max(n2, 1)))
    if se == 0.0:
        return MissingShift(p1, p2, 0.0, 1.0)
    z = (p2 - p1) / se
    return MissingShift(p1, p2, z, math.erfc(abs(z) / math.sqrt(2)))


@dataclass(frozen=True)
class UnseenShare:
    """Share of a window's values in categories never seen in training, tested against the rate of new
    categories the reference itself predicts (Good-Turing: categories seen once over the reference size)."""

    share: float
    expected_rate: float
    p_value: float


def unseen_share(ref: CategoricalSketch, live: CategoricalSketch) -> UnseenShare:
    from scipy.stats import binom

    _check(ref, live)
    singletons = sum(1 for c in ref.counts[:-1] if c == 1)
    rate = max(singletons, 1) / max(ref.observed, 1)
    n, k = live.observed, live.unseen
    share = k / n if n else 0.0
    p = float(binom.sf(k - 1, n, rate)) if k > 0 else 1.0
    return UnseenShare(share, rate, p)


@dataclass(frozen=True)
class FeatureDrift:
    """Every statistic that applies to a feature's kind; ``None`` where it does not apply."""

    psi: float
    js: float
    chi2: float
    chi2_p: float
    cramers_v: float
    ks: float | None
    ks_p: float | None
    wasserstein: float | None
    normed_wasserstein: float | None
    missing: MissingShift
    unseen: UnseenShare | None
    n_reference: int
    n_live: int
    exact: bool = False  # KS and Wasserstein from raw values (both sketches carry a sample)


def compare(ref: FeatureSketch, live: FeatureSketch) -> FeatureDrift:
    """All drift statistics between a reference sketch and a live sketch of the same layout."""
    _check(ref, live)
    r, q = np.asarray(ref.counts), np.asarray(live.counts)
    c2 = float(chi2_statistic(r, q))
    ks = ks_p = w = nw = None
    pair = samples(ref, live)
    if pair is not None:
        a, b = pair
        ks = raw.ks_statistic(a.values, b.values)
        ks_p = ks_pvalue(ks, a.size, b.size)
        w = raw.wasserstein(a.values, b.values, a.area)
        assert isinstance(ref, NumericSketch)  # only numeric sketches keep samples
        nw = w / raw.evidently_norm(a.values, ref.scale)
    elif isinstance(ref, NumericSketch):
        ks = float(ks_statistic(r, q))
        ks_p = ks_pvalue(ks, ref.observed, live.observed)
        w = float(wasserstein(r, q, ref.positions))
        nw = w / ref.scale
    unseen = (
        unseen_share(ref, live) if isinstance(ref, CategoricalSketch) and isinstance(live, CategoricalSketch) else None
    )
    return FeatureDrift(
        psi=float(psi(r, q)),
        js=float(js_distance(r, q)),
        chi2=c2,
        chi2_p=chi2_pvalue(c2, r, q),
        cramers_v=cramers_v(c2, ref.observed, live.observed),
        ks=ks,
        ks_p=ks_p,
        wasserstein=w,
        normed_wasserstein=nw,
        missing=missing_shift(ref, live),
        unseen=unseen,
        n_reference=ref.observed,
        n_live=live.observed,
        exact=pair is not None,
    )


def samples(ref: FeatureSketch, live: FeatureSketch) -> tuple[raw.Sample, raw.Sample] | None:
    """The raw-value samples of both numeric sketches when both keep them, else None."""
    if not (isinstance(ref, NumericSketch) and isinstance(live, NumericSketch)):
        return None
    if ref.sample is None or live.sample is None:
        return None
    return ref.sample, live.sample


def _check(ref: FeatureSketch, live: FeatureSketch) -> None:
    if not ref.same_layout(live):
        raise LayoutMismatch(
            "the window was binned with another profile's bins; bin live data with the reference profile it is "
            "compared against"
        )
