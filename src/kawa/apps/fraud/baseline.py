"""The handbook's baseline: a depth-2 decision tree under its train 7 days → skip 7 → test 7 protocol.

The protocol (after the handbook's description): train on the payments of ``train_days`` days, skip
``delay_days`` (the feedback delay: their labels are not known yet when the model goes live), test on the next
``test_days`` days. Cards already known to be compromised are left out of the test days — at first every card
with a fraud in the training days, then each test day also those whose fraud surfaced by that day (frauds of
the day ``delay_days + 1`` before it). The book's model: ``DecisionTreeClassifier(max_depth=2)`` on the 15
features of :mod:`kawa.apps.fraud.features`; the book reports AUC 0.764, AP 0.496, CP@100 0.24 on its data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kawa.apps.fraud.metrics import auprc, auroc, card_precision_at_k
from kawa.apps.fraud.transactions import F64, I64, Transactions

BOOK = {"auc": 0.764, "ap": 0.496, "cp100": 0.24}
"""The handbook's published numbers for this baseline on its book data set."""


@dataclass(frozen=True)
class Protocol:
    """Day numbers of the split; the book's training starts on 2018-07-25, day 115 of its data."""

    start_day: int = 115
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    @property
    def test_start(self) -> int:
        return self.start_day + self.train_days + self.delay_days


@dataclass(frozen=True)
class Scores:
    """AUROC, AUPRC and CP@k of scores on a set of payments."""

    auc: float
    ap: float
    cp_at_k: float
    k: int
    rows: int
    frauds: int


@dataclass(frozen=True)
class BaselineResult:
    train_rows: int
    train_frauds: int
    test: Scores


def split(tx: Transactions, protocol: Protocol | None = None) -> tuple[I64, I64]:
    """Row indices of the training and the test payments under ``protocol``."""
    p = protocol or Protocol()
    day = tx.day
    train = np.flatnonzero((day >= p.start_day) & (day < p.start_day + p.train_days))
    known = set(np.unique(tx.customer_id[train][tx.is_fraud[train]]).tolist())
    test_parts: list[I64] = []
    for i in range(p.test_days):
        surfaced = (day == p.start_day + p.train_days + i - 1) & tx.is_fraud
        known.update(np.unique(tx.customer_id[surfaced]).tolist())
        rows = np.flatnonzero(day == p.test_start + i)
        keep = ~np.isin(tx.customer_id[rows], np.fromiter(known, dtype=np.int64, count=len(known)))
        test_parts.append(rows[keep])
    test = np.concatenate(test_parts) if test_parts else np.zeros(0, dtype=np.int64)
    return train, test


def prequential(
    tx: Transactions, protocol: Protocol | None = None, *, folds: int = 4, step_days: int | None = None
) -> list[tuple[I64, I64]]:
    """Prequential validation (the handbook's model-selection scheme): ``folds`` train/test splits of the
    protocol, each starting ``step_days`` (default: the test length) earlier than the one before, fold 0 being
    ``protocol`` itself. Folds that would start before day 0 are left out."""
    p = protocol or Protocol()
    step = step_days if step_days is not None else p.test_days
    out = []
    for i in range(folds):
        start = p.start_day - i * step
        if start < 0:
            break
        out.append(split(tx, replace(p, start_day=start)))
    return out


def score(tx: Transactions, rows: I64, scores: F64, *, k: int = 100) -> Scores:
    """The metrics of ``scores`` (one a row of ``rows``) against the payments' true labels."""
    y = tx.is_fraud[rows]
    cp = card_precision_at_k(tx.day[rows], tx.customer_id[rows], scores, y, k=k)
    return Scores(auc=auroc(y, scores), ap=auprc(y, scores), cp_at_k=cp.mean, k=k, rows=len(rows),
                  frauds=int(y.sum()))


def fit_tree(x: F64, y: Any, *, max_depth: int = 2, seed: int = 0) -> Any:
    """The handbook's decision tree fitted on features ``x`` and labels ``y`` (scikit-learn)."""
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=max_depth, random_state=seed).fit(x, y)


def run_baseline(
    tx: Transactions, features: F64, protocol: Protocol | None = None, *, k: int = 100
) -> BaselineResult:
    """Train the tree on the protocol's training days and score its test days."""
    train, test = split(tx, protocol)
    model = fit_tree(features[train], tx.is_fraud[train])
    proba = model.predict_proba(features[test])[:, 1].astype(np.float64)
    return BaselineResult(train_rows=len(train), train_frauds=int(tx.is_fraud[train].sum()),
                          test=score(tx, test, proba, k=k))
