"""Delayed, biased labels as outcome events: what a bank learns about its payments, and when.

Fraud is confirmed days after the payment, and only for what someone looked at:

- **investigations** (:func:`investigate`): every day the investigators check the ``k`` cards with the highest
  score that day, plus a small randomised share of the other cards (each with a known propensity, so
  off-policy evaluation can reweight them); an investigation reveals the true label of every payment of that
  card that day, a few days later;
- **chargebacks** (:func:`chargebacks`): a customer disputes a share of the frauds on their card after a
  delay (log-normal in days);
- the **handbook's oracle** (:func:`oracle_labels`): every payment's label becomes known exactly ``delay``
  days later — the assumption behind the handbook's terminal-risk features.

A :class:`LabelEvents` row is one outcome event: which payment (``tx_id`` and the keys its features use),
when it happened, when the label was observed, the label and where it came from. All functions are pure:
randomness comes from the ``seed`` they are given.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from itertools import pairwise

import numpy as np

from kawa.apps.fraud.errors import InvalidTransactions
from kawa.apps.fraud.transactions import F64, I8, I64, SECONDS_PER_DAY, B, Transactions

ORACLE, INVESTIGATION, CHARGEBACK = 0, 1, 2
SOURCE_NAMES = {ORACLE: "oracle", INVESTIGATION: "investigation", CHARGEBACK: "chargeback"}


@dataclass(frozen=True, eq=False)
class LabelEvents:
    """Outcome events sorted by ``observed_at`` (ties by ``tx_id``); times in seconds like the payments'."""

    tx_id: I64
    customer_id: I64
    terminal_id: I64
    tx_time: I64
    observed_at: I64
    is_fraud: B
    source: I8

    def __post_init__(self) -> None:
        n = len(self.tx_id)
        if any(len(getattr(self, f.name)) != n for f in fields(self)):
            raise InvalidTransactions("every label column needs as many rows as tx_id")
        if bool(np.any(self.observed_at < self.tx_time)):
            raise InvalidTransactions("a label cannot be observed before its payment happened: check observed_at")

    def __len__(self) -> int:
        return len(self.tx_id)

    def take(self, rows: I64 | B) -> LabelEvents:
        return LabelEvents(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _events(tx: Transactions, rows: I64, observed_at: I64, source: int) -> LabelEvents:
    return LabelEvents(
        tx_id=tx.tx_id[rows],
        customer_id=tx.customer_id[rows],
        terminal_id=tx.terminal_id[rows],
        tx_time=tx.time[rows],
        observed_at=observed_at.astype(np.int64),
        is_fraud=tx.is_fraud[rows],
        source=np.full(len(rows), source, dtype=np.int8),
    )


def merge(*parts: LabelEvents) -> LabelEvents:
    """All events in one stream ordered by ``observed_at``, then ``tx_id``, then ``source``."""
    cols = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(LabelEvents)}
    order = np.lexsort((cols["source"], cols["tx_id"], cols["observed_at"]))
    return LabelEvents(**{k: v[order] for k, v in cols.items()})


def oracle_labels(tx: Transactions, delay_days: float = 7.0) -> LabelEvents:
    """Every payment labelled exactly ``delay_days`` after it happened (the handbook's feedback delay)."""
    rows = np.arange(len(tx), dtype=np.int64)
    return merge(_events(tx, rows, tx.time + round(delay_days * SECONDS_PER_DAY), ORACLE))


def chargebacks(
    tx: Transactions, *, share: float = 0.7, median_days: float = 10.0, sigma: float = 0.6, seed: int = 0
) -> LabelEvents:
    """Frauds that customers dispute: each fraud with probability ``share``, after a log-normal delay with
    median ``median_days`` days and shape ``sigma`` (at least one second)."""
    rng = np.random.default_rng(seed)
    fraud = np.flatnonzero(tx.is_fraud)
    disputed = fraud[rng.random(len(fraud)) < share]
    delay = np.maximum(1, np.rint(rng.lognormal(np.log(median_days * SECONDS_PER_DAY), sigma, len(disputed))))
    return merge(_events(tx, disputed, tx.time[disputed] + delay.astype(np.int64), CHARGEBACK))


@dataclass(frozen=True, eq=False)
class Investigations:
    """One row per (day, card with payments that day): the card's score (its highest that day), whether it was
    investigated, and why. ``propensity`` is the probability the policy investigates that card — 1 for the
    top-k, ``explore / (cards - k)`` for every other card — so a logged decision can be reweighted."""

    day: I64
    customer_id: I64
    score: F64
    investigated: B
    explored: B
    propensity: F64


def daily_card_scores(tx: Transactions, scores: F64) -> tuple[I64, I64, F64, I64]:
    """(day, customer) groups of the payments: their day, customer, highest score and group of each row."""
    if len(scores) != len(tx):
        raise InvalidTransactions(f"{len(scores)} scores for {len(tx)} payments: give one score a payment")
    day = tx.day
    order = np.lexsort((tx.customer_id, day))
    d, c = day[order], tx.customer_id[order]
    start = np.ones(len(order), dtype=bool)
    start[1:] = (d[1:] != d[:-1]) | (c[1:] != c[:-1])
    first = np.flatnonzero(start)
    best = np.maximum.reduceat(scores[order], first) if len(first) else np.zeros(0)
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.cumsum(start) - 1
    return d[first], c[first], best.astype(np.float64), group


def investigate(
    tx: Transactions,
    scores: F64,
    *,
    k: int = 100,
    explore: int = 5,
    delay_days: tuple[float, float] = (1.0, 3.0),
    seed: int = 0,
) -> tuple[Investigations, LabelEvents]:
    """Each day investigate the ``k`` highest-scoring cards (ties: lower customer id) and ``explore`` more drawn
    uniformly from the rest; every payment of an investigated card that day gets its true label, observed at
    the end of the day plus U(``delay_days``) days."""
    rng = np.random.default_rng(seed)
    day, customer, best, group = daily_card_scores(tx, scores)
    investigated = np.zeros(len(day), dtype=bool)
    explored = np.zeros(len(day), dtype=bool)
    propensity = np.zeros(len(day), dtype=np.float64)
    bounds = np.flatnonzero(np.r_[True, day[1:] != day[:-1], True])
    for lo, hi in pairwise(bounds):
        rank = lo + np.lexsort((customer[lo:hi], -best[lo:hi]))
        top, rest = rank[:k], rank[k:]
        investigated[top] = True
        propensity[top] = 1.0
        if len(rest):
            n_explore = min(explore, len(rest))
            picked = rng.choice(rest, size=n_explore, replace=False)
            investigated[picked] = explored[picked] = True
            propensity[rest] = n_explore / len(rest)
    cases = Investigations(day, customer, best, investigated, explored, propensity)
    case_delay = rng.uniform(delay_days[0], delay_days[1], size=len(day)) * SECONDS_PER_DAY
    case_seen = (day + 1) * SECONDS_PER_DAY + np.rint(case_delay).astype(np.int64)
    rows = np.flatnonzero(investigated[group])
    return cases, merge(_events(tx, rows, case_seen[group[rows]], INVESTIGATION))


def first_fraud_labels(labels: LabelEvents) -> LabelEvents:
    """The first fraud label of each payment (later confirmations of a known fraud add nothing)."""
    fraud = labels.take(labels.is_fraud)
    _, first = np.unique(fraud.tx_id, return_index=True)
    order = np.sort(first)
    return fraud.take(order)
