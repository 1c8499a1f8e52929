"""The handbook's fraud features, defined once and computed in the stream, keyed per customer and terminal.

For a payment at time ``t`` (seconds) by customer ``c`` at terminal ``m``, with windows ``w`` of 1, 7 and 30
days and the feedback delay ``d`` (7 days):

- ``amount``; ``is_weekend`` (Saturday or Sunday); ``is_night`` (hour of day ≤ 6);
- ``customer_nb_tx_{w}d``: payments of ``c`` in ``(t - w, t]``, this one and earlier ones at the same second
  included (stream order: time, then ``tx_id``); ``customer_avg_amount_{w}d``: their mean amount;
- ``terminal_nb_tx_{w}d``: payments at ``m`` in ``(t - d - w, t - d]`` (the window shifted by the delay);
- ``terminal_risk_{w}d``: the share of those payments known to be fraud at ``t`` — a payment counts from the
  first fraud label event for it with ``observed_at ≤ t``; 0 when the window is empty.

With the handbook's oracle labels (every label observed exactly ``d`` after its payment,
:func:`~kawa.apps.fraud.labels.oracle_labels`) this is the handbook's definition; with investigations and
chargebacks the risk sees only what was confirmed in time, which is what a deployed scorer sees.

The stream keeps one small state per customer and per terminal (:class:`FeatureState`): :func:`update` for a
payment returns its features and adds it to the state; :func:`observe_label` adds an outcome event. Events must
come in time order, a label before a payment at the same second. :mod:`~kawa.apps.fraud.backfill` computes the
same definitions in DuckDB SQL and numpy; the parity tests hold all three equal.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

import numpy as np

from kawa.apps.fraud.errors import InvalidTransactions
from kawa.apps.fraud.labels import LabelEvents
from kawa.apps.fraud.transactions import F64, NIGHT_LAST_HOUR, SECONDS_PER_DAY, Transactions

_TRIM = 256
"""Evicted entries kept before a state's lists are compacted (amortises ``del list[:n]``)."""


@dataclass(frozen=True)
class FeatureSpec:
    """Windows (days), the feedback delay (days) and the calendar the weekend is read from."""

    windows_days: tuple[int, ...] = (1, 7, 30)
    delay_days: int = 7
    start_date: date = date(2018, 4, 1)

    @property
    def names(self) -> tuple[str, ...]:
        ws = self.windows_days
        return (
            "amount",
            "is_weekend",
            "is_night",
            *(f"customer_{kind}_{w}d" for w in ws for kind in ("nb_tx", "avg_amount")),
            *(f"terminal_{kind}_{w}d" for w in ws for kind in ("nb_tx", "risk")),
        )


class Payment(NamedTuple):
    """One payment as the stream sees it: no label."""

    tx_id: int
    customer_id: int
    terminal_id: int
    time: int
    amount: float


class Outcome(NamedTuple):
    """One label event: the payment it is about (id, terminal, time), when it was observed, the label."""

    tx_id: int
    terminal_id: int
    tx_time: int
    observed_at: int
    is_fraud: bool


class _Customer:
    __slots__ = ("cents", "heads", "sums", "times")

    def __init__(self, n: int) -> None:
        self.times: list[int] = []
        self.cents: list[int] = []
        self.heads = [0] * n
        self.sums = [0] * n


class _Terminal:
    __slots__ = ("frauds", "heads", "known", "times", "top")

    def __init__(self, n: int) -> None:
        self.times: list[int] = []
        self.heads = [0] * n
        self.top = 0
        self.frauds: list[int] = []
        self.known: set[int] = set()


@dataclass
class FeatureState:
    """The stream's keyed state: one window state per customer and per terminal, and the stream's clock.

    Mutable on purpose (a state store, as in Kafka Streams): it can always be rebuilt by replaying the
    payments and label events from the log."""

    spec: FeatureSpec = field(default_factory=FeatureSpec)
    customers: dict[int, _Customer] = field(default_factory=dict)
    terminals: dict[int, _Terminal] = field(default_factory=dict)
    clock: int = -(2**62)

    def _advance(self, t: int) -> None:
        if t < self.clock:
            raise InvalidTransactions(
                f"event at {t} s after one at {self.clock} s: replay payments and labels in time order"
            )
        self.clock = t


def observe_label(state: FeatureState, label: Outcome) -> None:
    """Add a label event observed now (``observed_at``); only the first fraud label of a payment counts."""
    state._advance(label.observed_at)
    if not label.is_fraud:
        return
    term = state.terminals.get(label.terminal_id)
    if term is None:
        term = state.terminals[label.terminal_id] = _Terminal(len(state.spec.windows_days))
    if label.tx_id in term.known:
        return
    term.known.add(label.tx_id)
    insort(term.frauds, label.tx_time)


def update(state: FeatureState, tx: Payment) -> tuple[float, ...]:
    """The features of ``tx`` (in :attr:`FeatureSpec.names` order), then ``tx`` joins the state.

    The customer part reads and writes only ``tx.customer_id``'s state, the terminal part only
    ``tx.terminal_id``'s (and the label events of that terminal): on a partitioned log each part runs where
    its key lives, the terminal part after a repartition by terminal."""
    t = tx.time
    state._advance(t)
    spec = state.spec
    day = t // SECONDS_PER_DAY
    weekend = float((spec.start_date.weekday() + day) % 7 >= 5)
    night = float((t % SECONDS_PER_DAY) // 3600 <= NIGHT_LAST_HOUR)
    out: list[float] = [tx.amount, weekend, night]
    cust = state.customers.get(tx.customer_id)
    if cust is None:
        cust = state.customers[tx.customer_id] = _Customer(len(spec.windows_days))
    _customer_part(cust, spec, t, round(tx.amount * 100), out)
    term = state.terminals.get(tx.terminal_id)
    if term is None:
        term = state.terminals[tx.terminal_id] = _Terminal(len(spec.windows_days))
    _terminal_part(term, spec, t, out)
    return tuple(out)


def _customer_part(cust: _Customer, spec: FeatureSpec, t: int, cents: int, out: list[float]) -> None:
    """Count and mean amount over ``(t - w, t]``: integer cents, so the running sums are exact."""
    times, amounts, heads, sums = cust.times, cust.cents, cust.heads, cust.sums
    times.append(t)
    amounts.append(cents)
    size = len(times)
    for i, w in enumerate(spec.windows_days):
        edge, h, s = t - w * SECONDS_PER_DAY, heads[i], sums[i] + cents
        while times[h] <= edge:
            s -= amounts[h]
            h += 1
        heads[i], sums[i] = h, s
        out.append(float(size - h))
        out.append(s / (size - h) / 100.0)
    oldest = min(heads)
    if oldest > _TRIM:
        del times[:oldest], amounts[:oldest]
        cust.heads = [h - oldest for h in heads]


def _terminal_part(term: _Terminal, spec: FeatureSpec, t: int, out: list[float]) -> None:
    """Count over ``(t - d - w, t - d]`` and the share of it with a fraud label already observed."""
    shifted = t - spec.delay_days * SECONDS_PER_DAY
    ttimes, theads, top = term.times, term.heads, term.top
    while top < len(ttimes) and ttimes[top] <= shifted:
        top += 1
    term.top = top
    frauds = term.frauds
    known_top = bisect_right(frauds, shifted)
    for i, w in enumerate(spec.windows_days):
        edge, h = shifted - w * SECONDS_PER_DAY, theads[i]
        while h < top and ttimes[h] <= edge:
            h += 1
        theads[i] = h
        count = top - h
        out.append(float(count))
        out.append((known_top - bisect_right(frauds, edge)) / count if count else 0.0)
    ttimes.append(t)
    oldest = min(theads)
    if oldest > _TRIM:
        del ttimes[:oldest]
        term.heads = [h - oldest for h in theads]
        term.top -= oldest
        cut = bisect_right(frauds, shifted - max(spec.windows_days) * SECONDS_PER_DAY)
        del frauds[:cut]


def stream_features(tx: Transactions, labels: LabelEvents, spec: FeatureSpec | None = None) -> F64:
    """Replay ``tx`` and ``labels`` merged by event time (labels first at a tie) through a fresh
    :class:`FeatureState`; one row of features a payment, in ``tx`` order."""
    spec = spec or FeatureSpec(start_date=tx.start_date)
    state = FeatureState(spec=spec)
    n_tx, n_lab = len(tx), len(labels)
    when = np.concatenate([tx.time, labels.observed_at])
    kind = np.concatenate([np.ones(n_tx, dtype=np.int8), np.zeros(n_lab, dtype=np.int8)])
    order = np.lexsort((np.arange(n_tx + n_lab), kind, when)).tolist()
    pay = list(zip(tx.tx_id.tolist(), tx.customer_id.tolist(), tx.terminal_id.tolist(), tx.time.tolist(),
                   tx.amount.tolist(), strict=True))
    lab = list(zip(labels.tx_id.tolist(), labels.terminal_id.tolist(), labels.tx_time.tolist(),
                   labels.observed_at.tolist(), labels.is_fraud.tolist(), strict=True))
    rows: list[tuple[float, ...]] = []
    for i in order:
        if i < n_tx:
            rows.append(update(state, Payment(*pay[i])))
        else:
            observe_label(state, Outcome(*lab[i - n_tx]))
    return np.array(rows, dtype=np.float64).reshape(n_tx, len(spec.names))
