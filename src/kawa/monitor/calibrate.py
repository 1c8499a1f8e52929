"""Drift detectors calibrated to a declared false-alarm budget.

A :class:`DriftDetector` tests every window against the reference profile with a family of tests: per feature
(and for the score) a *distribution* test with the detector's statistic and a *missing-share* test, and per
categorical feature an *unseen-category* test. The budget is ARL0, the expected number of stationary windows
between false alarms; the detector holds the family-wise false-alarm probability per window at
``alpha = 1 / ARL0``:

- **Bootstrap null.** For each distribution test, :func:`calibrate` draws ``R`` pairs (a reference of the
  reference's size, a window of ``window_size`` records) from the reference's binned distribution - the
  binned form of resampling the reference data - and computes the statistic, so the null includes the
  reference's own sampling error. A window's p-value is ``(1 + #{null >= observed}) / (R + 1)``. ``R`` is chosen
  so that about 20 null values lie beyond the strictest per-test level ``alpha / m``.
- **Exact mode.** When the profile keeps raw values (``build_profile(..., samples=True)``) and the statistic is
  KS or Wasserstein, the test measures the exact statistic between the reference sample and the window's
  reservoir (:func:`~kawa.monitor.drift.compare`), and its null is simulated the same way on raw values: ``R``
  windows of ``window_size`` values resampled from the reference sample, each compared with it
  (:func:`~kawa.monitor.sample.ks_null`, :func:`~kawa.monitor.sample.wasserstein_null`, O(window) each). This
  null is conditional on the reference sample (the reference's own sampling error is not redrawn), which is
  accurate when the reference is many times the window (the seeded false-alarm test uses 100 times). The
  windows' reservoirs must hold ``window_size`` values (the window sample cap at least the window size).
- **Share tests.** The missing share uses a two-proportion z-test; the unseen-category share a binomial test
  against the Good-Turing rate of new categories the reference predicts.
- **Correction.** The ``m`` p-values of a window are corrected together, Bonferroni (reject ``p <= alpha / m``)
  or Benjamini-Yekutieli (step-up at ``k * alpha / (m * c(m))``, ``c(m) = 1 + 1/2 + ... + 1/m``, valid under any
  dependence; it controls the false discovery rate, and the family-wise rate when every null holds, which is
  the stationary case the budget is about).
- **Effect size.** A significant test alarms only when its effect reaches the declared minimum (PSI >= 0.1,
  normed Wasserstein >= delta, ...), so at large windows a negligible shift stays quiet.

The detector is calibrated for windows of ``window_size`` records; smaller windows are skipped (their null is
wider), larger ones are tested with the same thresholds, which is conservative.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from kawa.monitor import drift
from kawa.monitor import sample as raw
from kawa.monitor.alerts import Alert, Finding, Resolved, TestKind
from kawa.monitor.errors import MonitorError
from kawa.monitor.sketch import CategoricalSketch, FeatureSketch, NumericSketch, Profile
from kawa.monitor.windows import Window

Statistic = Literal["psi", "js", "wasserstein", "ks", "chi2"]
Correction = Literal["bonferroni", "by"]

SCORE = "<score>"
STATISTICS: tuple[Statistic, ...] = ("psi", "js", "wasserstein", "ks", "chi2")
CATEGORICAL_STATISTICS: tuple[Statistic, ...] = ("psi", "js", "chi2")
DEFAULT_MIN_EFFECT: Mapping[str, float] = {
    "psi": 0.1,
    "js": 0.1,
    "wasserstein": 0.1,
    "ks": 0.1,
    "chi2": 0.1,
    "missing": 0.05,
    "unseen": 0.01,
}
_CHUNK = 50_000


@dataclass(frozen=True)
class TestCalibration:
    """One test of the family: which feature, which statistic, its minimum effect and its bootstrap null tail
    (the largest null values, descending, of ``replicates`` draws; empty for the analytic share tests)."""

    __test__ = False  # not a pytest test class, despite its name

    feature: str
    test: TestKind
    statistic: str
    min_effect: float
    null_tail: tuple[float, ...] = ()
    replicates: int = 0
    threshold: float = math.nan
    exact: bool = False  # the statistic on raw values (exact mode), not on the bins
    n_live: int = 0  # the window size the null was simulated for

    def p_value(self, value: float) -> float:
        """Bootstrap p-value of an observed statistic; 1.0 when it is beyond the stored tail (p > alpha)."""
        exceed = bisect.bisect_right(self.null_tail, -value, key=operator.neg)  # the tail is descending
        if exceed >= len(self.null_tail):
            return 1.0
        return (1 + exceed) / (self.replicates + 1)


@dataclass(frozen=True)
class DetectorState:
    """The open alert (if any), the clean windows seen since it last alarmed, and counts of windows."""

    active: Alert | None = None
    clean: int = 0
    tested: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class DriftDetector:
    """A calibrated detector (frozen config); :meth:`step` is pure."""

    profile: Profile
    window_size: int
    arl0: float
    correction: Correction
    tests: tuple[TestCalibration, ...]
    reference_version: str = ""
    clear_after: int = 1

    @property
    def alpha(self) -> float:
        return 1.0 / self.arl0

    def evaluate(self, live: Profile) -> tuple[Finding, ...]:
        """Every test of the family on one window sketch, corrected together."""
        if not self.profile.same_layout(live):
            raise MonitorError(
                "the window was binned with another profile's bins; bin live data with the detector's profile"
            )
        raw = [self._measure(t, live) for t in self.tests]
        rejected = correct([p for _, _, p, _, _ in raw], self.alpha, self.correction)
        return tuple(
            Finding(
                feature=t.feature,
                test=t.test,
                statistic=t.statistic,
                value=value,
                effect=effect,
                min_effect=t.min_effect,
                threshold=t.threshold,
                p_value=p,
                n_reference=n_ref,
                n_live=n_live,
                significant=sig,
                alarm=sig and effect >= t.min_effect,
            )
            for t, (value, effect, p, n_ref, n_live), sig in zip(self.tests, raw, rejected, strict=True)
        )

    def step(self, state: DetectorState, window: Window) -> tuple[DetectorState, Alert | Resolved | None]:
        """Test a closed window: an :class:`Alert` when drift begins, ``None`` while it persists or while all is
        quiet, a :class:`Resolved` after ``clear_after`` consecutive clean windows."""
        if window.profile.n < self.window_size:
            return DetectorState(state.active, state.clean, state.tested, state.skipped + 1), None
        alarms = tuple(f for f in self.evaluate(window.profile) if f.alarm)
        tested = state.tested + 1
        if alarms:
            if state.active is not None:
                return DetectorState(state.active, 0, tested, state.skipped), None
            alert = Alert(window.start, window.end, self.reference_version, self.correction, self.alpha, alarms)
            return DetectorState(alert, 0, tested, state.skipped), alert
        if state.active is None:
            return DetectorState(None, 0, tested, state.skipped), None
        if state.clean + 1 >= self.clear_after:
            return DetectorState(None, 0, tested, state.skipped), Resolved(state.active, window.start, window.end)
        return DetectorState(state.active, state.clean + 1, tested, state.skipped), None

    def _measure(self, t: TestCalibration, live: Profile) -> tuple[float, float, float, int, int]:
        ref = _sketch(self.profile, t.feature)
        cur = _sketch(live, t.feature)
        if t.test == "missing":
            ms = drift.missing_shift(ref, cur)
            return ms.shift, abs(ms.shift), ms.p_value, ref.total, cur.total
        if t.test == "unseen":
            assert isinstance(ref, CategoricalSketch) and isinstance(cur, CategoricalSketch)
            us = drift.unseen_share(ref, cur)
            return us.share, us.share, us.p_value, ref.observed, cur.observed
        if t.exact:
            return self._measure_exact(t, ref, cur)
        r = np.asarray(ref.counts)
        q = np.asarray(cur.counts)
        value = float(statistic_values(t.statistic, ref, r, q))
        effect = drift.cramers_v(value, ref.observed, cur.observed) if t.statistic == "chi2" else value
        return value, effect, t.p_value(value), ref.observed, cur.observed

    def _measure_exact(
        self, t: TestCalibration, ref: FeatureSketch, cur: FeatureSketch
    ) -> tuple[float, float, float, int, int]:
        pair = drift.samples(ref, cur)
        if pair is None or not isinstance(cur, NumericSketch) or cur.sample is None:
            raise MonitorError(
                f"the detector tests {t.feature} on raw values but the window keeps none; bin windows with the "
                "detector's profile (Windows keeps a reservoir when the profile keeps a sample)"
            )
        if not cur.sample.complete and cur.sample.size < t.n_live:
            raise MonitorError(
                f"the window's reservoir of {t.feature} holds {cur.sample.size} values, fewer than the "
                f"{t.n_live} the detector is calibrated for; raise the window sample cap to the window size"
            )
        a, b = pair
        if t.statistic == "ks":
            value = raw.ks_statistic(a.values, b.values)
        else:
            assert isinstance(ref, NumericSketch)
            value = raw.wasserstein(a.values, b.values, a.area) / raw.evidently_norm(a.values, ref.scale)
        return value, value, t.p_value(value), a.size, b.size


def statistic_values(
    statistic: str, sketch: FeatureSketch, ref: npt.ArrayLike, live: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The named statistic along the last axis of count arrays laid out as ``sketch``."""
    if statistic == "psi":
        return drift.psi(ref, live)
    if statistic == "js":
        return drift.js_distance(ref, live)
    if statistic == "chi2":
        return drift.chi2_statistic(ref, live)
    if not isinstance(sketch, NumericSketch):
        raise MonitorError(f"{statistic} applies to numeric features only; use psi, js or chi2 for categories")
    if statistic == "ks":
        return drift.ks_statistic(ref, live)
    if statistic == "wasserstein":
        return drift.wasserstein(ref, live, sketch.positions) / sketch.scale
    raise MonitorError(f"unknown drift statistic {statistic}; choose one of {', '.join(STATISTICS)}")


def correct(p_values: list[float], alpha: float, correction: Correction) -> list[bool]:
    """Which of ``m`` p-values are rejected at family level ``alpha`` (Bonferroni or Benjamini-Yekutieli)."""
    m = len(p_values)
    if m == 0:
        return []
    if correction == "bonferroni":
        return [p <= alpha / m for p in p_values]
    if correction != "by":
        raise MonitorError(f"unknown correction {correction}; choose bonferroni or by")
    c_m = sum(1.0 / i for i in range(1, m + 1))
    order = sorted(range(m), key=lambda i: p_values[i])
    k = 0
    for rank, i in enumerate(order, start=1):
        if p_values[i] <= rank * alpha / (m * c_m):
            k = rank
    chosen = set(order[:k])
    return [i in chosen for i in range(m)]


def calibrate(
    profile: Profile,
    *,
    window_size: int,
    arl0: float,
    numeric: Statistic = "psi",
    categorical: Statistic = "psi",
    correction: Correction = "by",
    min_effect: Mapping[str, float] | None = None,
    seed: int = 0,
    replicates: int | None = None,
    reference_version: str = "",
    clear_after: int = 1,
) -> DriftDetector:
    """Calibrate a detector on a reference profile for windows of ``window_size`` records and a false-alarm
    budget of one per ``arl0`` stationary windows. ``min_effect`` overrides :data:`DEFAULT_MIN_EFFECT` per
    statistic (``missing`` and ``unseen`` for the share tests). Seeded: the same inputs give the same detector."""
    if window_size < 1:
        raise MonitorError(f"window_size must be a positive number of records, got {window_size}")
    if not arl0 > 1:
        raise MonitorError(f"the false-alarm budget ARL0 must be more than 1 window, got {arl0}")
    if numeric not in STATISTICS:
        raise MonitorError(f"unknown drift statistic {numeric}; choose one of {', '.join(STATISTICS)}")
    if categorical not in CATEGORICAL_STATISTICS:
        raise MonitorError(f"categorical features take psi, js or chi2, not {categorical}")
    if correction not in ("bonferroni", "by"):
        raise MonitorError(f"unknown correction {correction}; choose bonferroni or by")
    if clear_after < 1:
        raise MonitorError(f"clear_after must be at least 1 window, got {clear_after}")
    effects = {**DEFAULT_MIN_EFFECT, **(min_effect or {})}
    targets: list[tuple[str, FeatureSketch]] = list(profile.features.items())
    if profile.score is not None:
        targets.append((SCORE, profile.score))
    m = sum(3 if isinstance(s, CategoricalSketch) else 2 for _, s in targets)
    alpha = 1.0 / arl0
    r = replicates if replicates is not None else max(2000, math.ceil(20 * m / alpha))
    rng = np.random.default_rng(seed)
    tests: list[TestCalibration] = []
    # Features with the same reference counts (quantile bins of continuous data have equal counts) share a
    # null distribution, so they share one bootstrap: each test's null is still exact.
    nulls: dict[tuple[object, ...], TestCalibration] = {}
    for name, sketch in targets:
        stat = categorical if isinstance(sketch, CategoricalSketch) else numeric
        key: tuple[object, ...] = (stat, sketch.counts, sketch.missing)
        if stat == "wasserstein" and isinstance(sketch, NumericSketch):
            key += (sketch.positions, sketch.scale)
        if stat in ("ks", "wasserstein") and isinstance(sketch, NumericSketch) and sketch.sample is not None:
            values = sketch.sample.values
            # KS between a sample without ties and its resamples depends on the sizes only: one null for all.
            ties = values.size > 1 and bool(np.any(values[1:] == values[:-1]))
            key = ("exact", stat, values.size, sketch.observed, sketch.total) + (
                (name,) if stat == "wasserstein" or ties else ()
            )
        if key not in nulls:
            nulls[key] = _bootstrap(name, stat, sketch, window_size, r, alpha, m, effects[stat], rng)
        tests.append(dataclasses.replace(nulls[key], feature=name))
        tests.append(TestCalibration(name, "missing", "missing_share", effects["missing"]))
        if isinstance(sketch, CategoricalSketch):
            tests.append(TestCalibration(name, "unseen", "unseen_share", effects["unseen"]))
    return DriftDetector(profile, window_size, arl0, correction, tuple(tests), reference_version, clear_after)


def _bootstrap(
    name: str,
    stat: str,
    sketch: FeatureSketch,
    window_size: int,
    replicates: int,
    alpha: float,
    m: int,
    min_effect: float,
    rng: np.random.Generator,
) -> TestCalibration:
    counts = np.asarray(sketch.counts, dtype=np.float64)
    if counts.sum() == 0:
        raise MonitorError(f"feature {name} has no reference values; it cannot be calibrated")
    p = counts / counts.sum()
    n_ref = sketch.observed
    n_live = max(1, round(window_size * sketch.observed / max(sketch.total, 1)))
    keep = math.ceil(alpha * (replicates + 1)) + 1
    tail = np.empty(0)
    exact = stat in ("ks", "wasserstein") and isinstance(sketch, NumericSketch) and sketch.sample is not None
    for start in range(0, replicates if exact else 0, _CHUNK):
        assert isinstance(sketch, NumericSketch) and sketch.sample is not None
        size = min(_CHUNK, replicates - start)
        ref = sketch.sample.values
        if stat == "ks":
            null = raw.ks_null(ref, n_live, size, rng)
        else:
            null = raw.wasserstein_null(ref, n_live, size, rng) / raw.evidently_norm(ref, sketch.scale)
        tail = np.sort(np.concatenate([tail, null]))[::-1][:keep]
    for start in range(0, 0 if exact else replicates, _CHUNK):
        size = min(_CHUNK, replicates - start)
        null = statistic_values(
            stat, sketch, rng.multinomial(n_ref, p, size=size), rng.multinomial(n_live, p, size=size)
        )
        tail = np.sort(np.concatenate([tail, null]))[::-1][:keep]
    allowed = math.floor(alpha / m * (replicates + 1)) - 1
    threshold = float(tail[allowed]) if 0 <= allowed < tail.size else math.inf
    return TestCalibration(
        name, "distribution", stat, min_effect, tuple(float(v) for v in tail), replicates, threshold, exact, n_live
    )


def _sketch(profile: Profile, feature: str) -> FeatureSketch:
    if feature == SCORE:
        if profile.score is None:
            raise MonitorError("the window has no score sketch but the detector tests the score")
        return profile.score
    return profile.features[feature]
