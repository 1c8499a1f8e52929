"""The handbook's protocol (train 7 → skip 7 → test 7, known cards out of the test) and its decision tree."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.tree import DecisionTreeClassifier

from kawa.apps.fraud.backfill import numpy_features
from kawa.apps.fraud.baseline import Protocol, prequential, run_baseline, score, split
from kawa.apps.fraud.labels import oracle_labels
from kawa.apps.fraud.sim import Simulation


def test_protocol_days_and_known_cards(small_sim: Simulation) -> None:
    tx = small_sim.tx
    p = Protocol(start_day=10)
    train, test = split(tx, p)
    day = tx.day
    assert set(np.unique(day[train])) == set(range(10, 17))
    assert set(np.unique(day[test])) <= set(range(24, 31)) and len(np.unique(day[test])) == 7
    known = set(tx.customer_id[train][tx.is_fraud[train]].tolist())
    for i in range(7):
        known |= set(tx.customer_id[(day == 16 + i) & tx.is_fraud].tolist())  # surfaced the day before, minus 7
        rows = test[day[test] == 24 + i]
        assert not known & set(tx.customer_id[rows].tolist())
        all_rows = np.flatnonzero(day == 24 + i)
        assert len(rows) == int(np.sum(~np.isin(tx.customer_id[all_rows], list(known))))


def test_baseline_tree_scores_its_test_week_like_scikit_learn(design_sim: Simulation) -> None:
    """The book's split on the book's densities (1,000 customers: k = 20 is the book's 100 per 5,000)."""
    tx = design_sim.tx
    features = numpy_features(tx, oracle_labels(tx, 7))
    result = run_baseline(tx, features, Protocol(start_day=115), k=20)
    train, test = split(tx, Protocol(start_day=115))
    tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(features[train], tx.is_fraud[train])
    proba = tree.predict_proba(features[test])[:, 1]
    assert result.train_rows == len(train) and result.test.rows == len(test)
    assert abs(result.test.auc - roc_auc_score(tx.is_fraud[test], proba)) < 1e-12
    assert abs(result.test.ap - average_precision_score(tx.is_fraud[test], proba)) < 1e-12
    assert result.test.auc > 0.7 and result.test.ap > 5 * tx.is_fraud[test].mean()
    assert result.test.cp_at_k > 0
    rand = score(tx, test, np.random.default_rng(0).random(len(test)), k=20)
    assert result.test.cp_at_k > rand.cp_at_k and result.test.ap > rand.ap


def test_prequential_folds_step_back_one_test_week_each(design_sim: Simulation) -> None:
    tx = design_sim.tx
    folds = prequential(tx, Protocol(start_day=115), folds=4)
    assert len(folds) == 4
    for i, (train, test) in enumerate(folds):
        ref_train, ref_test = split(tx, Protocol(start_day=115 - 7 * i))
        np.testing.assert_array_equal(train, ref_train)
        np.testing.assert_array_equal(test, ref_test)
        assert tx.day[train].min() == 115 - 7 * i and tx.day[test].max() == 135 - 7 * i
    assert len(prequential(tx, Protocol(start_day=10), folds=4)) == 2  # days 10 and 3; -4 would be before day 0
