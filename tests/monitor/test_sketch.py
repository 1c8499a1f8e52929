"""Sketches merge exactly, stay bounded, bin like the reference and round-trip through JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.errors import KawaError
from kawa.monitor import (
    CategoricalSketch,
    LayoutMismatch,
    MonitorError,
    NumericSketch,
    Profile,
    build_profile,
    categorical_reference,
    numeric_reference,
)

_REF = build_profile(
    {
        "age": np.random.default_rng(0).normal(50, 10, size=1000),
        "ward": np.random.default_rng(1).choice(["icu", "er", "gen"], size=1000),
    },
    score=np.random.default_rng(2).uniform(size=1000),
    categorical=["ward"],
)

values = st.one_of(st.none(), st.just(math.nan), st.floats(-1e6, 1e6))
wards = st.one_of(st.none(), st.sampled_from(["icu", "er", "gen", "new-ward", "other"]))
batches = st.integers(0, 30).flatmap(
    lambda n: st.tuples(
        st.lists(values, min_size=n, max_size=n),
        st.lists(wards, min_size=n, max_size=n),
        st.lists(st.floats(0, 1), min_size=n, max_size=n),
    )
)


def _window(batch: tuple[list[float | None], list[str | None], list[float]]) -> Profile:
    age, ward, score = batch
    return _REF.empty().add({"age": age, "ward": ward}, score)


@settings(max_examples=60, deadline=None)
@given(batches, batches, batches)
def test_merge_is_associative_and_commutative_with_empty_as_identity(a, b, c) -> None:  # type: ignore[no-untyped-def]
    x, y, z = _window(a), _window(b), _window(c)
    assert x.merge(y) == y.merge(x)
    assert x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(_REF.empty()) == x


@settings(max_examples=60, deadline=None)
@given(batches, batches)
def test_merging_two_batches_equals_the_sketch_of_their_concatenation(a, b) -> None:  # type: ignore[no-untyped-def]
    joined = tuple(list(u) + list(v) for u, v in zip(a, b, strict=True))
    assert _window(a).merge(_window(b)) == _window(joined)  # type: ignore[arg-type]
    assert _window(joined).n == len(a[0]) + len(b[0])


def test_memory_is_bins_not_records() -> None:
    rng = np.random.default_rng(3)
    live = _REF.empty()
    for _ in range(20):
        live = live.add({"age": rng.normal(50, 10, 5000), "ward": ["icu"] * 5000}, rng.uniform(size=5000))
    age = live.features["age"]
    assert isinstance(age, NumericSketch)
    assert len(age.counts) == len(_REF.features["age"].counts) <= 10
    assert live.n == 100_000 and age.total == 100_000


def test_numeric_bins_are_reference_quantiles_with_tails_and_missing() -> None:
    sk = numeric_reference(np.arange(1000, dtype=float), bins=10)
    assert len(sk.edges) == 9 and len(sk.counts) == 10
    assert sk.counts == (100,) * 10  # each quantile bin, tails included, holds a tenth of the reference
    live = sk.empty().add([-1e9, 1e9, float("nan"), None, 500.0])
    assert live.counts[0] == 1 and live.counts[-1] == 1  # far outside the training range: the tail bins
    assert live.missing == 2 and live.observed == 3
    assert math.isclose(sk.positions[0], 49.5)  # a bin's position is the mean of its reference values
    assert math.isclose(sk.scale, float(np.std(np.arange(1000))))


def test_a_constant_reference_still_bins() -> None:
    sk = numeric_reference([3.0] * 50)
    assert sk.counts == (0, 50)
    assert sk.empty().add([2.0, 3.0, 4.0]).counts == (1, 2)


def test_categories_unseen_in_training_and_missing_are_counted() -> None:
    sk = categorical_reference(["a", "b", "a", None, float("nan")])
    assert sk.categories == ("a", "b") and sk.counts == (2, 1, 0) and sk.missing == 2
    live = sk.empty().add(["a", "zzz", "yyy", None])
    assert isinstance(live, CategoricalSketch)
    assert live.counts == (1, 0, 2) and live.unseen == 2 and live.missing == 1


def test_an_absent_feature_counts_as_missing_for_the_whole_batch() -> None:
    live = _REF.empty().add({"age": [40.0, 60.0]})
    assert live.features["ward"].missing == 2 and live.score is not None and live.score.missing == 2


@settings(max_examples=30, deadline=None)
@given(batches)
def test_profile_round_trips_through_json(batch) -> None:  # type: ignore[no-untyped-def]
    live = _window(batch)
    assert Profile.from_json(live.to_json()) == live
    assert Profile.from_json(_REF.to_json()) == _REF


def test_sketches_of_different_references_refuse_to_merge() -> None:
    other = build_profile(
        {"age": np.arange(100.0), "ward": ["icu"] * 100}, score=np.arange(100.0), categorical=["ward"]
    )
    with pytest.raises(LayoutMismatch, match="same reference profile"):
        _REF.empty().merge(other.empty())
    with pytest.raises(LayoutMismatch):
        _REF.features["age"].merge(_REF.features["ward"])


def test_bad_input_gets_a_clear_kawa_error() -> None:
    with pytest.raises(MonitorError, match="declare the feature categorical"):
        _REF.empty().add({"age": ["old", "young"]})
    with pytest.raises(MonitorError, match="max_categories"):
        categorical_reference([str(i) for i in range(20)], max_categories=10)
    with pytest.raises(MonitorError, match="one length"):
        _REF.empty().add({"age": [1.0, 2.0], "ward": ["icu"]})
    with pytest.raises(MonitorError, match="no values"):
        numeric_reference([None, float("nan")])
    with pytest.raises(MonitorError, match="categorical features"):
        build_profile({"a": [1.0]}, categorical=["b"])
    with pytest.raises(MonitorError, match="re-create it"):
        Profile.from_json('{"format": "kawa.monitor.profile/1"}')
    with pytest.raises(KawaError, match="not a Kawa monitoring profile"):
        Profile.from_json('{"format": "other"}')
