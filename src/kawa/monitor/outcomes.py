"""The outcome joiner: the one I/O piece of the delayed-outcome join (the join itself is :mod:`kawa.monitor.join`).

:class:`OutcomeJoiner` reads the decisions and outcomes topics in *steps*. A step reads each topic up to the
end offsets it found when it began, adds the decisions, then the outcomes, advances the join's watermark and
then records the step (end offsets and watermark) as one record on a checkpoint topic. On start it replays
the recorded steps from the beginning of both topics, so its state is the state the previous process had
after its last recorded step, bit for bit, whichever process it runs in (a restart or a second worker). A
step whose checkpoint was not written before a crash is redone, and gives the same result.

With ``snapshot_every=k`` it also writes the whole join state (:func:`kawa.monitor.join.snapshot`, split into
parts of at most 256 KiB) after every ``k``-th step; a restart then loads the last complete snapshot and
replays only the steps after it, so the topics need to keep only the records since that snapshot. A snapshot
cut short by a crash is ignored.

It holds no state the log cannot rebuild; it commits no consumer offsets (the checkpoint topic is the record
of progress).
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import EventError
from kawa.events.cloudevents import to_kafka
from kawa.log.base import Consumer, Record, TopicPartition, TopicSpec
from kawa.monitor.errors import MonitorError
from kawa.monitor.failures import FailureRecord, decode_failure
from kawa.monitor.join import (
    Advance,
    JoinConfig,
    JoinCounts,
    JoinState,
    restore,
    snapshot,
    step,
)
from kawa.monitor.records import DecisionRecord, OutcomeEvent, decode

if TYPE_CHECKING:
    from kawa.events.cloudevents import CloudEvent
    from kawa.log.base import EventLog, Producer, RecordMetadata

__all__ = ["OutcomeJoiner", "publish"]

Offsets = dict[int, int]
SNAPSHOT_HEADER = "kawa-join-snapshot"
PART_BYTES = 256 * 1024


def publish(producer: Producer, topic: str, event: CloudEvent) -> RecordMetadata:
    """Write a decision or outcome CloudEvent (binary mode) and wait for the log to acknowledge it."""
    key, value, headers = to_kafka(event)
    return producer.send(topic, value, key=key, headers=headers)


class OutcomeJoiner:
    """Joins the ``decisions`` and ``outcomes`` topics with ``config``, recording its steps on ``checkpoints``.

    ``lateness``: the default watermark is the latest event time read (decision times and outcome observation
    times) minus ``lateness`` seconds. ``accept``: only decisions it returns True for are joined (it sees every
    decision read, in log order, on replay too). ``on_advance``: called with every step's result, replayed steps
    included, so a consumer of the matured decisions rebuilds with the join (use it without ``snapshot_every``:
    a snapshot skips the steps before it). ``on_failure``: sees every failure record on the decisions topic
    (:mod:`kawa.monitor.failures`), in log order among the decisions, replay included. Other records are
    skipped; records whose data does not match the schema are counted in :attr:`invalid` and skipped.

    One joiner steps a checkpoint topic at a time: a second worker is a standby that calls :meth:`start` when it
    takes over (the steps of two joiners stepping at once would interleave on the checkpoint topic).
    """

    def __init__(
        self,
        log: EventLog,
        config: JoinConfig,
        *,
        decisions: str = "decisions",
        outcomes: str = "outcomes",
        checkpoints: str = "monitor-join-checkpoints",
        lateness: float = 0.0,
        snapshot_every: int | None = None,
        read_timeout_s: float = 30.0,
        accept: Callable[[DecisionRecord], bool] | None = None,
        on_advance: Callable[[Advance], None] | None = None,
        on_failure: Callable[[FailureRecord], None] | None = None,
    ) -> None:
        self.log = log
        self.config = config
        self.topics = (decisions, outcomes)
        self.checkpoints = checkpoints
        self.lateness = lateness
        self.read_timeout_s = read_timeout_s
        if snapshot_every is not None and snapshot_every < 1:
            raise MonitorError(f"snapshot_every is a number of steps >= 1 (or None: never), got {snapshot_every}")
        self.snapshot_every = snapshot_every
        self.accept = accept
        self.on_advance = on_advance
        self.on_failure = on_failure
        self.state = JoinState(config)
        self.invalid = 0
        self.steps = 0
        self.replayed_steps = 0  # steps redone by start() (after the snapshot it loaded, if any)
        self._latest = -math.inf
        self._positions: dict[str, Offsets] = {decisions: {}, outcomes: {}}
        self._consumers: dict[str, Consumer] = {}
        self._producer: Producer | None = None

    def start(self) -> OutcomeJoiner:
        """Open the consumers and rebuild the state from the recorded steps."""
        self.log.create_topic(TopicSpec(self.checkpoints, 1, retention_ms=None), exist_ok=True)
        group = f"kawa-outcome-joiner-{uuid.uuid4().hex[:12]}"  # private: positions are ours, not the group's
        for topic in (*self.topics, self.checkpoints):
            self._consumers[topic] = self.log.consumer(group + "-" + topic, [topic])
        self._producer = self.log.producer()
        steps: list[dict[str, Any]] = []
        parts: list[bytes] = []
        latest: tuple[int, bytes] | None = None  # (steps recorded before it, the snapshot)
        for record in self._read(self.checkpoints, {0: 0}, self._ends(self.checkpoints)):
            mark = record.header(SNAPSHOT_HEADER)
            if mark is None:
                steps.append(json.loads(record.value or b"{}"))
                parts = []
                continue
            index, total = (int(x) for x in mark.decode().split("/"))
            parts = [] if index == 0 else parts
            parts = [*parts, record.value or b""] if index == len(parts) else []
            if len(parts) == total:
                latest, parts = (len(steps), b"".join(parts)), []
        if latest is not None:
            self._load(json.loads(latest[1]))
        for recorded in steps[latest[0] if latest else 0 :]:
            self._apply({t: {int(p): o for p, o in recorded[t].items()} for t in self.topics}, recorded["watermark"])
            self.replayed_steps += 1
        return self

    @property
    def counts(self) -> JoinCounts:
        return self.state.counts()

    def step(self, watermark: float | None = None) -> Advance:
        """Read what both topics hold now, join it, advance to ``watermark`` (default: latest event time minus
        the lateness) and record the step. Returns the matured decisions, expired ones and late outcomes."""
        if self._producer is None:
            raise MonitorError("start() the outcome joiner before stepping it")
        ends = {topic: self._ends(topic) for topic in self.topics}
        result = self._apply(ends, watermark, fixed=watermark is not None)
        record: dict[str, object] = {"watermark": result.watermark if math.isfinite(result.watermark) else None}
        record.update({t: {str(p): o for p, o in ends[t].items()} for t in self.topics})
        self._producer.send(self.checkpoints, json.dumps(record, separators=(",", ":")).encode())
        if self.snapshot_every is not None and self.steps % self.snapshot_every == 0:
            self._write_snapshot()
        return result

    def _write_snapshot(self) -> None:
        assert self._producer is not None
        body = {
            "join": snapshot(self.state),
            "positions": {t: {str(p): o for p, o in self._positions[t].items()} for t in self.topics},
            "latest": self._latest if math.isfinite(self._latest) else None,
            "steps": self.steps,
            "invalid": self.invalid,
        }
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        chunks = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)]
        for i, chunk in enumerate(chunks):
            header = (SNAPSHOT_HEADER, f"{i}/{len(chunks)}".encode())
            self._producer.produce(self.checkpoints, chunk, headers=[header])
        self._producer.flush()

    def _load(self, body: dict[str, Any]) -> None:
        self.state = restore(body["join"])
        if self.state.config != self.config:
            raise MonitorError(
                f"the checkpoint topic {self.checkpoints!r} holds a join with {self.state.config}, not "
                f"{self.config}; use a checkpoint topic of its own for each join configuration"
            )
        self._positions = {t: {int(p): o for p, o in body["positions"][t].items()} for t in self.topics}
        self._latest = -math.inf if body["latest"] is None else float(body["latest"])
        self.steps, self.invalid = int(body["steps"]), int(body["invalid"])

    def run(self, on_step: Callable[[Advance], None], stop: threading.Event, *, interval_s: float = 1.0) -> None:
        """Step until ``stop`` is set, handing each step's result to ``on_step`` once its checkpoint is durable
        (a consumer that must not lose results writes them idempotently, keyed by the decision), and waiting
        ``interval_s`` between steps (less when ``stop`` is set meanwhile)."""
        while not stop.is_set():
            on_step(self.step())
            stop.wait(interval_s)

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    def _apply(self, ends: Mapping[str, Offsets], watermark: float | None, *, fixed: bool = True) -> Advance:
        decisions_topic, outcomes_topic = self.topics
        decisions: list[DecisionRecord] = []
        outcomes: list[OutcomeEvent] = []
        for topic in self.topics:
            for record in self._read(topic, self._positions[topic], ends[topic]):
                item = self._decode(record)
                if isinstance(item, DecisionRecord) and topic == decisions_topic:
                    if self.accept is not None and not self.accept(item):
                        continue
                    decisions.append(item)
                    self._latest = max(self._latest, item.decided_at)
                elif isinstance(item, OutcomeEvent) and topic == outcomes_topic:
                    outcomes.append(item)
                    self._latest = max(self._latest, item.observed_at)
                elif item is None and self.on_failure is not None and topic == decisions_topic:
                    failure = self._decode_failure(record)
                    if failure is not None:
                        self.on_failure(failure)
            self._positions[topic] = dict(ends[topic])
        if watermark is None:
            # A recorded step with no watermark (nothing read yet) or an unfixed one: derive it from the data.
            watermark = self._latest - self.lateness if not fixed else -math.inf
        self.steps += 1
        result = step(self.state, decisions, outcomes, watermark)
        if self.on_advance is not None:
            self.on_advance(result)
        return result

    def _decode(self, record: Record) -> DecisionRecord | OutcomeEvent | None:
        try:
            return decode(record)
        except EventError:
            self.invalid += 1
            return None

    def _decode_failure(self, record: Record) -> FailureRecord | None:
        try:
            return decode_failure(record)
        except EventError:
            self.invalid += 1
            return None

    def _ends(self, topic: str) -> Offsets:
        return {p.partition: p.end_offset for p in self.log.describe_topic(topic).partitions}

    def _read(self, topic: str, start: Mapping[int, int], end: Mapping[int, int]) -> list[Record]:
        """The records of ``topic`` from ``start`` up to (not including) ``end`` per partition, in partition
        and offset order."""
        wanted = {p: (start.get(p, 0), e) for p, e in end.items() if start.get(p, 0) < e}
        if not wanted:
            return []
        consumer = self._consumers[topic]
        deadline = time.monotonic() + self.read_timeout_s
        while not {TopicPartition(topic, p) for p in wanted} <= consumer.assignment():
            consumer.poll(0.05)
            self._check(deadline, topic)
        for p, (first, _) in wanted.items():
            consumer.seek(TopicPartition(topic, p), first)
        records: list[Record] = []
        remaining = set(wanted)
        while remaining:
            for record in consumer.poll(0.1):
                first, last = wanted.get(record.partition, (0, 0))
                if first <= record.offset < last:
                    records.append(record)
            remaining = {p for p in remaining if consumer.position(TopicPartition(topic, p)) < wanted[p][1]}
            if remaining:
                self._check(deadline, topic)
        records.sort(key=lambda r: (r.partition, r.offset))
        return records

    def _check(self, deadline: float, topic: str) -> None:
        if time.monotonic() > deadline:
            raise MonitorError(
                f"the outcome joiner could not read topic {topic!r} within {self.read_timeout_s} s; check that "
                "the log is reachable, or raise read_timeout_s"
            )
