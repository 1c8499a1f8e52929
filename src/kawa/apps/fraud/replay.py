"""``kawa replay`` for the fraud app: simulated payments and their delayed labels, by event time, at a speed.

- :func:`pacing` is the pure schedule: the wall-clock offset of each event time at a speed factor (event
  seconds per wall second; ``inf`` = as fast as the log takes them).
- :class:`Replay` is the small loop that follows it: payments (``dev.kawa.fraud.transaction``, id ``tx-<n>``,
  event time = the simulator's seconds after ``epoch_of(start_date)``) onto the transactions topic, and every
  label when it is due — the outcome (``kawa.monitor.outcome``) onto the outcomes topic, the feature label
  (``dev.kawa.fraud.label``) onto the transactions topic, labels first at a tie.

Labels come from two places: the ones known up front (chargebacks from :func:`~kawa.apps.fraud.labels.
chargebacks`) and, with ``investigations=True``, the cases the stream opened: the replay reads the
investigated topic as it goes and schedules each case's results (:func:`~kawa.apps.fraud.outcomes.
investigation_labels`). A case result read after its due time (the stream lagged the replay) is published at
once with ``observed_at`` moved to the replay's clock, so the features still see time order.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kawa.apps.fraud.events import LABEL_TYPE, TRANSACTION_TYPE, FraudLabel
from kawa.apps.fraud.outcomes import REPLAY_SOURCE, Due, due_outcomes, investigation_labels
from kawa.apps.fraud.settings import FraudSettings
from kawa.apps.fraud.transactions import SECONDS_PER_DAY, Transactions
from kawa.events.cloudevents import new_event, to_kafka

if TYPE_CHECKING:
    from kawa.apps.fraud.labels import LabelEvents
    from kawa.events import CloudEvent
    from kawa.log.base import Consumer, EventLog, Producer


def epoch_of(day: date) -> int:
    """Midnight UTC of ``day`` in epoch seconds: the simulator's second 0."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def pacing(times: Any, speed: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Wall-clock offsets (s) from the first event at which each event time is due at ``speed`` event seconds
    a wall second (``inf``: all at once). ``times`` must be non-decreasing."""
    t = np.asarray(times, dtype=np.float64)
    if speed <= 0 or math.isnan(speed):
        raise ValueError("speed must be > 0 (event seconds per wall second)")
    if len(t) == 0 or math.isinf(speed):
        return np.zeros(len(t), dtype=np.float64)
    out: np.ndarray[Any, np.dtype[np.float64]] = (t - t[0]) / speed
    return out


def transaction_event(
    tx_id: int, customer: int, terminal: int, t: int, amount: float, source: str = REPLAY_SOURCE
) -> CloudEvent:
    data = {"tx_id": tx_id, "customer_id": customer, "terminal_id": terminal, "time": t, "amount": amount}
    return new_event(TRANSACTION_TYPE, source, data, id=f"tx-{tx_id}", time=datetime.fromtimestamp(t, UTC))


def corrupt_event(tx_id: int, t: int, source: str = REPLAY_SOURCE) -> CloudEvent:
    """A damaged payment (its amount is text): the function dead-letters it."""
    data = {"tx_id": tx_id, "customer_id": 0, "terminal_id": 0, "time": t, "amount": "a lot"}
    return new_event(TRANSACTION_TYPE, source, data, id=f"tx-{tx_id}", time=datetime.fromtimestamp(t, UTC))


def label_event(label: FraudLabel, source: str = REPLAY_SOURCE) -> CloudEvent:
    return new_event(
        LABEL_TYPE, source, label.data(), id=f"label-{label.source}-{label.tx_id}",
        time=datetime.fromtimestamp(label.observed_at, UTC),
    )  # fmt: skip


def write_payments(tx: Transactions, path: str | Path) -> Path:
    """The payments as a Parquet file for the platform's ``kawa replay`` (payments only, no labels)::

        kawa replay payments.parquet --topic fraud-transactions --time-column time \\
            --type dev.kawa.fraud.transaction --speed 8640

    Columns ``tx_id, customer_id, terminal_id, time`` (epoch seconds) and ``amount``: a
    ``dev.kawa.fraud.transaction`` each row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(path)
    pq.write_table(pa.table({
        "tx_id": tx.tx_id, "customer_id": tx.customer_id, "terminal_id": tx.terminal_id,
        "time": tx.time + epoch_of(tx.start_date), "amount": tx.amount,
    }), out)  # fmt: skip
    return out


@dataclass
class ReplayStats:
    payments: int = 0
    corrupt: int = 0
    labels: int = 0
    outcomes: int = 0
    cases: int = 0
    late_labels: int = 0
    """Case results read after they were due (published at the replay's clock)."""
    event_time: int = 0
    wall_s: float = 0.0
    by_day: dict[int, int] = field(default_factory=dict)


class Replay:
    """Replays ``tx`` (simulator seconds) and the ``labels`` known up front onto the app's topics. ``source``
    is the CloudEvents source of what it publishes: give each replay of the same table its own (the function
    host deduplicates by source + id, so a second replay with the same source would be skipped)."""

    def __init__(
        self,
        log: EventLog,
        settings: FraudSettings,
        tx: Transactions,
        labels: LabelEvents | None = None,
        *,
        speed: float | None = None,
        investigations: bool = True,
        corrupt: float = 0.0,
        seed: int = 0,
        source: str = REPLAY_SOURCE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.log, self.settings, self.tx = log, settings, tx
        self.speed = settings.speed if speed is None else speed
        self.epoch0 = epoch_of(tx.start_date)
        self.investigations, self.corrupt, self.seed = investigations, corrupt, seed
        self.clock, self.sleep, self.source = clock, sleep, source
        self.stats = ReplayStats()
        self._pending: list[tuple[int, int, Due]] = []
        self._seq = 0
        self._cases: set[tuple[int, int]] = set()
        known = [] if labels is None else due_outcomes(labels, epoch0=self.epoch0, card=settings.card, source=source)
        for due in known:
            self._push(due)

    def _push(self, due: Due) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (due.observed_at, self._seq, due))

    def run(self, stop: threading.Event | None = None) -> ReplayStats:
        """Publish every payment and every label due up to the last payment; returns what was sent."""
        stop = stop or threading.Event()
        producer = self.log.producer()
        cases = self._case_reader() if self.investigations else None
        tx, s, started = self.tx, self.settings, self.clock()
        times = (self.epoch0 + tx.time).tolist()
        offsets = pacing(times, self.speed).tolist()
        rows = zip(tx.tx_id.tolist(), tx.customer_id.tolist(), tx.terminal_id.tolist(), times, tx.amount.tolist(),
                   strict=True)  # fmt: skip
        bad = np.random.default_rng(self.seed).random(len(tx)) < self.corrupt
        try:
            for i, (tx_id, customer, terminal, t, amount) in enumerate(rows):
                if not self._wait(started + offsets[i], stop):
                    break
                if cases is not None:
                    self._read_cases(cases, t)
                self._publish_due(producer, t)
                event = (
                    corrupt_event(tx_id, t, self.source)
                    if bad[i]
                    else transaction_event(tx_id, customer, terminal, t, amount, self.source)
                )
                self._send(producer, s.transactions_topic, event)
                self.stats.payments += 1
                self.stats.corrupt += int(bad[i])
                day = (t - self.epoch0) // SECONDS_PER_DAY
                self.stats.by_day[day] = self.stats.by_day.get(day, 0) + 1
                self.stats.event_time = t
            producer.flush()
        finally:
            producer.close()
            if cases is not None:
                cases.close()
        self.stats.wall_s = self.clock() - started
        return self.stats

    def _wait(self, due: float, stop: threading.Event) -> bool:
        while not stop.is_set():
            left = due - self.clock()
            if left <= 0:
                return True
            self.sleep(min(left, 0.1))
        return False

    def _send(self, producer: Producer, topic: str, event: CloudEvent) -> None:
        key, value, headers = to_kafka(event)
        producer.produce(topic, value, key=key, headers=headers)

    def _publish_due(self, producer: Producer, now: int) -> None:
        s = self.settings
        while self._pending and self._pending[0][0] <= now:
            _, _, due = heapq.heappop(self._pending)
            self._send(producer, s.outcomes_topic, due.outcome.to_event(self.source, id=due.outcome.id))
            self._send(producer, s.transactions_topic, label_event(due.label, self.source))
            self.stats.outcomes += 1
            self.stats.labels += 1

    def _case_reader(self) -> Consumer:
        group = f"fraud-replay-cases-{id(self):x}"
        return self.log.consumer(group, [self.settings.investigated_topic], auto_offset_reset="earliest")

    def _read_cases(self, consumer: Consumer, now: int) -> None:
        """New cases on the investigated topic → their results, scheduled (no later than ``now``)."""
        import json

        fresh: list[tuple[int, int]] = []
        for record in consumer.poll(timeout=0.0, max_records=1000):
            try:
                data = json.loads(record.value or b"{}")
                tx_id = int(data["tx_id"])
            except (ValueError, KeyError, TypeError):
                continue
            if (data.get("event") or {}).get("source", self.source) != self.source:
                continue  # a case of another replay (an earlier run on the same log)
            if not 0 <= tx_id < len(self.tx):
                continue
            case = (int(self.tx.customer_id[tx_id]), int(self.tx.day[tx_id]))
            if case not in self._cases:
                self._cases.add(case)
                fresh.append(case)
        if not fresh:
            return
        self.stats.cases += len(fresh)
        labels = investigation_labels(self.tx, fresh, seed=self.seed + self.stats.cases)
        for due in due_outcomes(labels, epoch0=self.epoch0, card=self.settings.card, source=self.source):
            if due.observed_at < now:
                self.stats.late_labels += 1
                due = Due(now, replace(due.outcome, observed_at=float(now)), due.label.model_copy(
                    update={"observed_at": now}))  # fmt: skip
            self._push(due)
