"""Delayed labels as outcomes: chargebacks and investigation results, due days after the payment.

Two shapes of the same truth, from a :class:`~kawa.apps.fraud.labels.LabelEvents` table (``labels.py``):

- an :class:`~kawa.monitor.records.OutcomeEvent` for monitoring and evaluation, on the outcomes topic: by the
  :class:`~kawa.events.EventRef` of the payment's event (the replay gives payment ``n`` the id ``tx-n``), or
  by entity (the card's pseudonym) with ``at`` = the payment's time;
- a ``dev.kawa.fraud.label`` event on the transactions topic, so the streaming features' terminal risk sees the
  fraud from the moment it was observed, in event-time order with the payments.

:func:`investigation_labels` turns the investigations the stream decided (one case a card and day) into label
events, as :func:`kawa.apps.fraud.labels.investigate` does offline for top-k cases: every payment of that card
that day gets its true label, observed at the end of the day plus U(``delay_days``) days. All functions here
are pure (randomness from a seed); :mod:`~kawa.apps.fraud.replay` publishes what they return when it is due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kawa.apps.fraud.events import FraudLabel
from kawa.apps.fraud.labels import INVESTIGATION, SOURCE_NAMES, LabelEvents, merge
from kawa.apps.fraud.transactions import SECONDS_PER_DAY, Transactions
from kawa.events.ref import EventRef
from kawa.monitor.records import OutcomeEvent

REPLAY_SOURCE = "kawa://fraud/replay"
"""The CloudEvents ``source`` of replayed payments; payment ``n`` has the id ``tx-n``."""

Target = Literal["ref", "entity"]


def payment_ref(tx_id: int, source: str = REPLAY_SOURCE) -> EventRef:
    """The EventRef of replayed payment ``tx_id``."""
    return EventRef(source, f"tx-{tx_id}")


@dataclass(frozen=True)
class Due:
    """One label, due at ``observed_at`` (epoch seconds): the outcome event and the feature label event."""

    observed_at: int
    outcome: OutcomeEvent
    label: FraudLabel


def due_outcomes(
    labels: LabelEvents,
    *,
    epoch0: int,
    card: Callable[[int], str],
    target: Target = "ref",
    source: str = REPLAY_SOURCE,
) -> list[Due]:
    """Each label event as an outcome (by payment ``ref``, or by ``entity`` = ``card(customer)`` with ``at``)
    and a feature label; simulator seconds become epoch seconds by adding ``epoch0``. In ``labels`` order."""
    out: list[Due] = []
    cols = zip(
        labels.tx_id.tolist(), labels.customer_id.tolist(), labels.terminal_id.tolist(), labels.tx_time.tolist(),
        labels.observed_at.tolist(), labels.is_fraud.tolist(), labels.source.tolist(), strict=True,
    )  # fmt: skip
    for tx_id, customer, terminal, tx_time, seen, fraud, kind in cols:
        name = SOURCE_NAMES.get(int(kind), "label")
        observed, at = epoch0 + int(seen), epoch0 + int(tx_time)
        ident = f"{name}-{tx_id}"
        outcome = (
            OutcomeEvent(float(observed), ref=payment_ref(tx_id, source), label=int(fraud), id=ident)
            if target == "ref"
            else OutcomeEvent(float(observed), entity=card(customer), at=float(at), label=int(fraud), id=ident)
        )
        label = FraudLabel(tx_id=tx_id, terminal_id=terminal, tx_time=at, observed_at=observed,
                           is_fraud=bool(fraud), source=name)  # fmt: skip
        out.append(Due(observed, outcome, label))
    return out


def investigation_labels(
    tx: Transactions,
    cases: Iterable[tuple[int, int]],
    *,
    delay_days: tuple[float, float] = (1.0, 3.0),
    seed: int = 0,
) -> LabelEvents:
    """The label events of investigations ``cases`` (``(customer_id, day)`` pairs, simulator days): each
    payment of that card that day, observed at the end of the day plus U(``delay_days``) days."""
    unique = sorted(set(cases))
    if not unique:
        return merge(_take(tx, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
    rng = np.random.default_rng(seed)
    delay = np.rint(rng.uniform(delay_days[0], delay_days[1], size=len(unique)) * SECONDS_PER_DAY).astype(np.int64)
    seen_at = {case: (case[1] + 1) * SECONDS_PER_DAY + int(d) for case, d in zip(unique, delay.tolist(), strict=True)}
    day = tx.day.tolist()
    rows = [i for i, c in enumerate(tx.customer_id.tolist()) if (c, day[i]) in seen_at]
    index = np.array(rows, dtype=np.int64)
    observed = np.array([seen_at[(int(tx.customer_id[i]), day[i])] for i in rows], dtype=np.int64)
    return merge(_take(tx, index, observed))


def _take(tx: Transactions, rows: np.ndarray, observed: np.ndarray) -> LabelEvents:
    return LabelEvents(
        tx_id=tx.tx_id[rows], customer_id=tx.customer_id[rows], terminal_id=tx.terminal_id[rows],
        tx_time=tx.time[rows], observed_at=observed.astype(np.int64), is_fraud=tx.is_fraud[rows],
        source=np.full(len(rows), INVESTIGATION, dtype=np.int8),
    )  # fmt: skip
