"""Mergeable per-feature sketches and the reference :class:`Profile`.

A sketch is a fixed-bin histogram whose bins come from a *reference* sample (the training data). Every live
window is binned with the reference's bins, so a window's sketch and the reference's have the same layout and
any drift statistic is a function of two count vectors. Guarantees:

- **Exact merge.** ``a.merge(b)`` adds counts; it is associative and commutative, and merging the sketches of
  two batches equals the sketch of their concatenation. Sketches of different layouts refuse to merge.
- **Bounded memory.** A sketch holds O(bins) integers whatever the number of records it has seen; a profile
  holds O(features x bins).
- **Numeric bins.** Cut points are the reference quantiles ``k/B`` for ``k = 1..B-1`` (ties collapsed), so the
  first bin is the underflow ``(-inf, c_1)`` and the last the overflow ``[c_last, +inf)``: each holds about
  ``1/B`` of the reference, and a live value far outside the training range still lands in a tail bin. ``NaN`` and
  ``None`` count as missing, never in a bin. Each bin keeps a representative position (the mean of the
  reference values in it) for the Wasserstein distance, and the sketch keeps the reference standard deviation
  as the scale that normalises it.
- **Raw values (exact mode).** A numeric sketch may also carry a :class:`~kawa.monitor.sample.Sample` of its
  raw values: a reference built with ``samples=True`` keeps up to ``sample_cap`` of them (sorted; a deterministic
  uniform subsample beyond), and the windows binned with it keep a bounded reservoir each. Where both sides carry
  one, KS and Wasserstein are the exact statistics of the raw values (:func:`~kawa.monitor.drift.compare`). Layout
  ignores samples; merging merges them (bottom-k, see :mod:`kawa.monitor.sample`): exact while the values fit
  the cap, a uniform subsample of both beyond it (not necessarily the one their concatenation would keep).
- **Categorical bins.** One bin per category seen in the reference (in first-seen order of frequency) and a
  last bin counting categories never seen in training; ``None``/``NaN`` count as missing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kawa.monitor.errors import LayoutMismatch, MonitorError
from kawa.monitor.sample import DEFAULT_SAMPLE_CAP, Sample

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROFILE_FORMAT = "kawa.monitor.profile/1"
DEFAULT_BINS = 10
MAX_CATEGORIES = 1000


@dataclass(frozen=True)
class NumericSketch:
    """Counts of a numeric feature in the reference's bins, plus the missing count."""

    edges: tuple[float, ...]
    positions: tuple[float, ...]
    scale: float
    counts: tuple[int, ...]
    missing: int = 0
    sample: Sample | None = None
    kind: Literal["numeric"] = field(default="numeric", init=False)

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges) + 1 or len(self.positions) != len(self.counts):
            raise MonitorError(
                f"a numeric sketch needs one count and one position per bin ({len(self.edges) + 1} bins for "
                f"{len(self.edges)} cut points), got {len(self.counts)} counts and {len(self.positions)} positions"
            )

    @property
    def observed(self) -> int:
        """Records with a value (not missing)."""
        return sum(self.counts)

    @property
    def total(self) -> int:
        return self.observed + self.missing

    def empty(self, sample_cap: int | None = None) -> NumericSketch:
        """A sketch with this layout and no records: the identity of :meth:`merge`. When this one keeps raw values,
        so does the empty one, up to ``sample_cap`` (default: this sample's cap)."""
        sample = None if self.sample is None else Sample.empty(sample_cap or self.sample.cap)
        return NumericSketch(self.edges, self.positions, self.scale, (0,) * len(self.counts), 0, sample)

    def same_layout(self, other: FeatureSketch) -> bool:
        return (
            isinstance(other, NumericSketch)
            and other.edges == self.edges
            and other.positions == self.positions
            and other.scale == self.scale
        )

    def merge(self, other: FeatureSketch) -> NumericSketch:
        if not isinstance(other, NumericSketch) or not self.same_layout(other):
            raise LayoutMismatch(
                "cannot merge sketches binned by different reference profiles; bin both windows with the same profile"
            )
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        sample = self.sample.merge(other.sample) if self.sample is not None and other.sample is not None else None
        return NumericSketch(self.edges, self.positions, self.scale, counts, self.missing + other.missing, sample)

    def add(self, values: Iterable[Any]) -> NumericSketch:
        """This sketch with ``values`` counted in (a new sketch; this one is unchanged)."""
        x = _as_float(values)
        missing = np.isnan(x)
        idx = np.searchsorted(np.asarray(self.edges, dtype=np.float64), x[~missing], side="right")
        binned = np.bincount(idx, minlength=len(self.counts))
        counts = tuple(int(a) + int(b) for a, b in zip(self.counts, binned, strict=True))
        sample = None if self.sample is None else self.sample.add(x)
        return NumericSketch(self.edges, self.positions, self.scale, counts, self.missing + int(missing.sum()), sample)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "edges": list(self.edges),
            "positions": list(self.positions),
            "scale": self.scale,
            "counts": list(self.counts),
            "missing": self.missing,
            **({"sample": self.sample.to_dict()} if self.sample is not None else {}),
        }


@dataclass(frozen=True)
class CategoricalSketch:
    """Counts of a categorical feature per reference category; the last count is categories unseen in training."""

    categories: tuple[str, ...]
    counts: tuple[int, ...]
    missing: int = 0
    kind: Literal["categorical"] = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.categories) + 1:
            raise MonitorError(
                f"a categorical sketch needs one count per category plus one for unseen categories "
                f"({len(self.categories) + 1}), got {len(self.counts)}"
            )

    @property
    def unseen(self) -> int:
        return self.counts[-1]

    @property
    def observed(self) -> int:
        return sum(self.counts)

    @property
    def total(self) -> int:
        return self.observed + self.missing

    def empty(self, sample_cap: int | None = None) -> CategoricalSketch:
        return CategoricalSketch(self.categories, (0,) * len(self.counts), 0)

    def same_layout(self, other: FeatureSketch) -> bool:
        return isinstance(other, CategoricalSketch) and other.categories == self.categories

    def merge(self, other: FeatureSketch) -> CategoricalSketch:
        if not isinstance(other, CategoricalSketch) or not self.same_layout(other):
            raise LayoutMismatch(
                "cannot merge sketches binned by different reference profiles; bin both windows with the same profile"
            )
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return CategoricalSketch(self.categories, counts, self.missing + other.missing)

    def add(self, values: Iterable[Any]) -> CategoricalSketch:
        index = {c: i for i, c in enumerate(self.categories)}
        unseen = len(self.categories)
        counts = list(self.counts)
        missing = self.missing
        for value in values:
            if _is_missing(value):
                missing += 1
            else:
                counts[index.get(str(value), unseen)] += 1
        return CategoricalSketch(self.categories, tuple(counts), missing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "categories": list(self.categories),
            "counts": list(self.counts),
            "missing": self.missing,
        }


FeatureSketch = NumericSketch | CategoricalSketch


def numeric_reference(values: Iterable[Any], bins: int = DEFAULT_BINS, sample_cap: int | None = None) -> NumericSketch:
    """The reference sketch of a numeric feature: ``bins`` quantile bins (fewer when values tie) with its counts,
    and (given ``sample_cap``) up to that many of its raw values."""
    if bins < 2:
        raise MonitorError(f"a numeric feature needs at least 2 bins, got {bins}")
    x = _as_float(values)
    present = x[~np.isnan(x)]
    if present.size == 0:
        raise MonitorError("the reference has no values for this numeric feature; it cannot be profiled")
    if not np.all(np.isfinite(present)):
        raise MonitorError("the reference holds infinite values; replace them or record them as missing")
    qs = np.quantile(present, np.arange(1, bins) / bins)
    edges = np.unique(qs)  # a constant feature keeps one cut: below it is the underflow, at or above the overflow
    idx = np.searchsorted(edges, present, side="right")
    nbins = edges.size + 1
    counts = np.bincount(idx, minlength=nbins)
    sums = np.bincount(idx, weights=present, minlength=nbins)
    width = float(np.mean(np.diff(edges))) if edges.size > 1 else 1.0
    fallback = np.concatenate([[edges[0] - width / 2], (edges[:-1] + edges[1:]) / 2, [edges[-1] + width / 2]])
    positions = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
    scale = float(np.std(present))
    return NumericSketch(
        edges=tuple(float(e) for e in edges),
        positions=tuple(float(p) for p in positions),
        scale=scale if scale > 0 else 1.0,
        counts=tuple(int(c) for c in counts),
        missing=int(x.size - present.size),
        sample=None if sample_cap is None else Sample.of(present, sample_cap),
    )


def categorical_reference(values: Iterable[Any], max_categories: int = MAX_CATEGORIES) -> CategoricalSketch:
    """The reference sketch of a categorical feature: one bin per category, most frequent first."""
    seen: Counter[str] = Counter()
    missing = 0
    for value in values:
        if _is_missing(value):
            missing += 1
        else:
            seen[str(value)] += 1
    if len(seen) > max_categories:
        raise MonitorError(
            f"the reference has {len(seen)} distinct categories, more than max_categories={max_categories}; "
            "declare the feature numeric or raise max_categories"
        )
    if not seen:
        raise MonitorError("the reference has no values for this categorical feature; it cannot be profiled")
    ordered = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
    return CategoricalSketch(
        categories=tuple(c for c, _ in ordered), counts=(*(n for _, n in ordered), 0), missing=missing
    )


@dataclass(frozen=True)
class Profile:
    """Per-feature sketches, the score's sketch and the record count: a reference or a live window.

    ``features`` maps a feature name to its sketch. Every record counts once in every feature sketch (as
    missing when it lacks the feature), so each sketch's ``total`` equals ``n``.
    """

    features: Mapping[str, FeatureSketch]
    score: NumericSketch | None = None
    n: int = 0

    def empty(self, sample_cap: int | None = None) -> Profile:
        """A profile with this layout and no records: what a live window starts from (keeping up to
        ``sample_cap`` raw values per numeric feature where this profile keeps a sample)."""
        return Profile(
            {name: s.empty(sample_cap) for name, s in self.features.items()},
            self.score.empty(sample_cap) if self.score is not None else None,
            0,
        )

    def same_layout(self, other: Profile) -> bool:
        if self.features.keys() != other.features.keys():
            return False
        if (self.score is None) != (other.score is None):
            return False
        if self.score is not None and other.score is not None and not self.score.same_layout(other.score):
            return False
        return all(s.same_layout(other.features[name]) for name, s in self.features.items())

    def merge(self, other: Profile) -> Profile:
        if not self.same_layout(other):
            raise LayoutMismatch(
                "cannot merge profiles with different features or bins; bin both with the same reference profile"
            )
        score = self.score.merge(other.score) if self.score is not None and other.score is not None else None
        return Profile(
            {name: s.merge(other.features[name]) for name, s in self.features.items()}, score, self.n + other.n
        )

    def add(self, columns: Mapping[str, Sequence[Any]], score: Sequence[Any] | None = None) -> Profile:
        """This profile with a batch of records counted in; columns are per-feature values of equal length.

        A profiled feature absent from ``columns`` counts as missing for every record of the batch; columns
        that are not profiled are ignored (the app declares which features are recorded).
        """
        lengths = {len(v) for v in columns.values()} | ({len(score)} if score is not None else set())
        if len(lengths) > 1:
            raise MonitorError(f"a batch's columns must have one length each, got lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        features: dict[str, FeatureSketch] = {}
        for name, sketch in self.features.items():
            values = columns.get(name)
            features[name] = sketch.add(values if values is not None else [None] * n)
        new_score = self.score
        if self.score is not None:
            new_score = self.score.add(score if score is not None else [None] * n)
        return Profile(features, new_score, self.n + n)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": PROFILE_FORMAT,
                "n": self.n,
                "features": {name: s.to_dict() for name, s in self.features.items()},
                "score": self.score.to_dict() if self.score is not None else None,
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> Profile:
        try:
            doc = json.loads(text)
            if doc.get("format") != PROFILE_FORMAT:
                raise MonitorError(
                    f"not a Kawa monitoring profile (format {doc.get('format')!s}, expected {PROFILE_FORMAT}); "
                    "write it with Profile.to_json"
                )
            features = {name: _sketch_from_dict(d) for name, d in doc["features"].items()}
            score = _sketch_from_dict(doc["score"]) if doc["score"] is not None else None
            if score is not None and not isinstance(score, NumericSketch):
                raise MonitorError("a profile's score sketch must be numeric")
            return Profile(features, score, int(doc["n"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MonitorError(f"the profile document is malformed ({type(exc).__name__}); re-create it") from exc


def build_profile(
    columns: Mapping[str, Sequence[Any]],
    score: Sequence[Any] | None = None,
    *,
    categorical: Iterable[str] = (),
    bins: int = DEFAULT_BINS,
    samples: bool = False,
    sample_cap: int = DEFAULT_SAMPLE_CAP,
) -> Profile:
    """The reference profile of training data: numeric features (and the score) in quantile bins, the features
    named in ``categorical`` by category. The reference's own counts are kept, so the profile is also the
    reference sample for drift statistics and calibration. With ``samples`` every numeric sketch also keeps up
    to ``sample_cap`` raw values (the exact mode: KS and Wasserstein on raw values)."""
    cats = set(categorical)
    unknown = cats - columns.keys()
    if unknown:
        raise MonitorError(f"categorical features {sorted(unknown)} are not among the columns {sorted(columns)}")
    lengths = {len(v) for v in columns.values()} | ({len(score)} if score is not None else set())
    if len(lengths) != 1:
        raise MonitorError(f"the reference columns must have one length each, got lengths {sorted(lengths)}")
    cap = sample_cap if samples else None
    features: dict[str, FeatureSketch] = {
        name: categorical_reference(values) if name in cats else numeric_reference(values, bins, cap)
        for name, values in columns.items()
    }
    return Profile(features, numeric_reference(score, bins, cap) if score is not None else None, lengths.pop())


def _sketch_from_dict(d: Mapping[str, Any]) -> FeatureSketch:
    if d["kind"] == "numeric":
        return NumericSketch(
            tuple(float(e) for e in d["edges"]),
            tuple(float(p) for p in d["positions"]),
            float(d["scale"]),
            tuple(int(c) for c in d["counts"]),
            int(d["missing"]),
            Sample.from_dict(d["sample"]) if d.get("sample") is not None else None,
        )
    if d["kind"] == "categorical":
        return CategoricalSketch(
            tuple(str(c) for c in d["categories"]), tuple(int(c) for c in d["counts"]), int(d["missing"])
        )
    raise MonitorError(f"unknown sketch kind {d['kind']!s}; expected numeric or categorical")


def _as_float(values: Iterable[Any]) -> FloatArray:
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False).ravel()
    seq = values if isinstance(values, (list, tuple, np.ndarray)) else list(values)
    try:
        return np.array([np.nan if v is None else v for v in seq], dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise MonitorError(
            "a numeric feature got a value that is not a number; declare the feature categorical or fix the input"
        ) from exc


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
