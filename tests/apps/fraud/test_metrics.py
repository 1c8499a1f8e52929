"""CP@k a day, AUROC and AUPRC: hand cases, a naive re-implementation, and scikit-learn on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from kawa.apps.fraud.metrics import auprc, auroc, card_precision_at_k


def _naive_cp(day: list[int], card: list[int], score: list[float], fraud: list[bool], k: int) -> list[float]:
    """CP@k written the obvious way: dictionaries, sorted(), a set of blocked cards."""
    blocked: set[int] = set()
    out = []
    for d in sorted(set(day)):
        best: dict[int, tuple[float, bool]] = {}
        for dd, c, s, f in zip(day, card, score, fraud, strict=True):
            if dd == d and c not in blocked:
                s0, f0 = best.get(c, (-np.inf, False))
                best[c] = (max(s0, s), f0 or f)
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        hits = [c for c, (_, f) in top if f]
        out.append(len(hits) / k)
        blocked.update(hits)
    return out


def test_card_precision_hand_case() -> None:
    # Day 0: cards 1 (fraud, 0.9), 2 (0.8), 3 (fraud, 0.1). Day 1: card 1 again (fraud, 0.95) is blocked
    # already, so card 4 (fraud, 0.5) and card 2 (0.4) are the top two.
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    card = np.array([1, 2, 3, 1, 1, 4, 2])
    score = np.array([0.9, 0.8, 0.1, 0.2, 0.95, 0.5, 0.4])
    fraud = np.array([True, False, True, False, True, True, False])
    cp = card_precision_at_k(day, card, score, fraud, k=2)
    np.testing.assert_allclose(cp.daily, [0.5, 0.5])
    assert cp.detected == 2 and cp.mean == 0.5
    kept = card_precision_at_k(day, card, score, fraud, k=2, remove_detected=False)
    np.testing.assert_allclose(kept.daily, [0.5, 1.0])  # without blocking, card 1 is found again


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8), st.integers(0, 5), st.booleans()),
                min_size=1, max_size=80), st.integers(1, 5))
def test_card_precision_equals_the_naive_version(rows: list[tuple[int, int, int, bool]], k: int) -> None:
    day, card, score, fraud = (list(x) for x in zip(*rows, strict=True))
    scores = [s / 5 for s in score]  # few distinct values: ties must break by card id
    ours = card_precision_at_k(np.array(day), np.array(card), np.array(scores), np.array(fraud), k=k)
    np.testing.assert_allclose(ours.daily, _naive_cp(day, card, scores, fraud, k))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_auprc_match_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(3000) < 0.05
    score = np.round(rng.random(3000) + y * rng.random(3000), 1 + seed % 3)  # rounding makes ties
    assert auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert auprc(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)


def test_auroc_is_the_probability_a_fraud_outscores_a_genuine_payment() -> None:
    """Seeded simulation: two normals a distance 1 apart have AUC Φ(1/√2) ≈ 0.7602."""
    rng = np.random.default_rng(7)
    values = []
    for _ in range(30):
        y = rng.random(4000) < 0.1
        values.append(auroc(y, rng.normal(size=4000) + y))
    assert abs(np.mean(values) - 0.76025) < 3 * np.std(values) / np.sqrt(len(values)) + 1e-3
    assert auprc(np.array([True, False]), np.array([1.0, 0.0])) == 1.0


def test_metrics_refuse_what_they_cannot_compute() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc(np.zeros(4, dtype=bool), np.arange(4.0))
    with pytest.raises(ValueError, match="k must be"):
        card_precision_at_k(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1), np.zeros(1, bool), k=0)
