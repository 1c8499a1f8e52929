"""Fraud metrics: card precision among the top-k cards a day (CP@k), AUROC and AUPRC.

CP@k is the handbook's operational metric: investigators can check ``k`` cards a day, so what matters is how
many of the ``k`` highest-scoring cards of a day are compromised. A card's score on a day is its highest
payment score; it is compromised that day when any of its payments is fraud. As in the handbook, a card found
compromised is blocked, so it is left out of the following days (``remove_detected``). A day's precision is
over ``k`` even when fewer cards paid that day.

AUROC is the Mann-Whitney statistic with tied scores counted one half; AUPRC is average precision (the step
sum over distinct thresholds, as scikit-learn computes it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kawa.apps.fraud.errors import InvalidSettings, InvalidTransactions
from kawa.apps.fraud.transactions import F64, I64, B


@dataclass(frozen=True, eq=False)
class CardPrecision:
    """CP@k of each day (``days``), their mean, and how many compromised cards were detected in all."""

    k: int
    days: I64
    daily: F64
    detected: int

    @property
    def mean(self) -> float:
        return float(self.daily.mean()) if len(self.daily) else float("nan")


def card_precision_at_k(
    day: I64, customer: I64, score: F64, is_fraud: B, *, k: int = 100, remove_detected: bool = True
) -> CardPrecision:
    """CP@k a day over payments (one entry a payment); ties in score rank the lower customer id first."""
    if not len(day) == len(customer) == len(score) == len(is_fraud):
        raise InvalidTransactions("day, customer, score and is_fraud need one entry a payment each")
    if k < 1:
        raise InvalidSettings("k must be at least 1: the cards investigators can check a day")
    order = np.lexsort((customer, day))
    d, c = day[order], customer[order]
    start = np.ones(len(order), dtype=bool)
    start[1:] = (d[1:] != d[:-1]) | (c[1:] != c[:-1])
    first = np.flatnonzero(start)
    if len(first) == 0:
        return CardPrecision(k, np.zeros(0, dtype=np.int64), np.zeros(0), 0)
    card_day, card = d[first], c[first]
    card_score = np.maximum.reduceat(score[order].astype(np.float64), first)
    card_fraud = np.maximum.reduceat(is_fraud[order].astype(np.int64), first) > 0
    detected: set[int] = set()
    days = np.unique(card_day)
    daily = np.zeros(len(days))
    bounds = [int(b) for b in np.atleast_1d(np.searchsorted(card_day, np.r_[days, days[-1] + 1]))]
    for i in range(len(days)):
        lo, hi = bounds[i], bounds[i + 1]
        cards, scores, frauds = card[lo:hi], card_score[lo:hi], card_fraud[lo:hi]
        if remove_detected and detected:
            keep = ~np.isin(cards, np.fromiter(detected, dtype=np.int64))
            cards, scores, frauds = cards[keep], scores[keep], frauds[keep]
        top = np.lexsort((cards, -scores))[:k]
        hits = cards[top][frauds[top]]
        daily[i] = len(hits) / k
        detected.update(int(x) for x in hits)
    return CardPrecision(k, days.astype(np.int64), daily, len(detected))


def _check(y: B, score: F64) -> tuple[B, F64]:
    y, score = np.asarray(y).astype(bool), np.asarray(score, dtype=np.float64)
    if len(y) != len(score):
        raise InvalidSettings(f"{len(y)} labels and {len(score)} scores: give one score a label")
    if y.all() or not y.any():
        raise InvalidSettings("AUROC/AUPRC need both classes among the labels: widen the window")
    return y, score


def auroc(y: B, score: F64) -> float:
    """Area under the ROC curve: P(score of a fraud > score of a genuine payment), ties one half."""
    y, score = _check(y, score)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    # Mid-ranks of tied scores: (first rank + last rank) / 2, ranks starting at 1.
    ends = np.cumsum(counts)
    mid = ends - (counts - 1) / 2.0
    ranks = mid[inverse]
    n1 = float(y.sum())
    n0 = float(len(y)) - n1
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auprc(y: B, score: F64) -> float:
    """Average precision: the sum over distinct thresholds of (recall gain) x precision at that threshold."""
    y, score = _check(y, score)
    order = np.argsort(-score, kind="stable")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tps = np.cumsum(yy)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(gain * precision))
