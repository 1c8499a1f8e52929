"""Monitoring as a consumer group: ``kawa worker --monitor``, the decisions topic shared out by model.

Decision records are keyed by their model (``ctx.decide`` sets the ``partitionkey`` extension to the model name),
so all of one model's decisions are on one partition of the decisions topic, in log order. The members of the
consumer group ``kawa-monitor`` share the partitions; each monitors the models of the partitions it holds:

- **on assignment** of a partition it seeks to the partition's start and replays it, rebuilding the
  :class:`~kawa.monitor.service.Monitor` of every model it finds there (and, with a join, that model's
  :class:`~kawa.monitor.outcomes.OutcomeJoiner` from its checkpoint topic), exactly as a restarted
  :class:`~kawa.monitor.service.MonitorService` does; before replaying it reads the alerts topic to its end, so
  the events the previous owner wrote are known and not written again (their ids are derived from what raised
  them, the same in every process);
- **on revocation** it drops those models' state (the new owner rebuilds it);
- a record whose offset is not the next one expected (the partition moved away and back between two polls, or
  retention removed what was next) rebuilds the partition the same way.

It commits a partition's offset only after the events of everything before it were acknowledged by the log, and
never behind the group's committed offset (a replay re-reads what the previous owner already committed), so a
lag of zero means every decision's events are written. The consumer group is the only coordination: Kafka's
cooperative-sticky assignment revokes a partition from its owner (whose written events are flushed by then)
before it is assigned to another, so no event is written twice. On the embedded log, whose rebalances are eager,
two members can hold a partition for a moment; an event can then be written twice, with one id (readers fold by
id).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kawa.monitor.errors import MonitorError
from kawa.monitor.records import DecisionRecord, decode
from kawa.monitor.service import Monitor, MonitorConfig
from kawa.monitor.sketch import Profile
from kawa.monitor.status import MonitorEvent

if TYPE_CHECKING:
    from kawa.log.base import Consumer, EventLog, Producer, Record, TopicPartition
    from kawa.monitor.outcomes import OutcomeJoiner

__all__ = ["GROUP", "MonitorWorker", "ProfilesOf"]

log = logging.getLogger("kawa.monitor.worker")

GROUP = "kawa-monitor"

ProfilesOf = Callable[[str, int], Profile | None]
"""The reference profile of (model, version); None: it has none (its decisions are counted, not tested)."""


@dataclass
class _Model:
    """One model this member monitors: its pure core, its join, and the partition its decisions are on."""

    partition: TopicPartition
    core: Monitor
    joiner: OutcomeJoiner | None = None


class _Seen:
    """The ids of the events on the alerts topic, read incrementally (a private consumer, never committed)."""

    def __init__(self, log: EventLog, topic: str, timeout_s: float) -> None:
        self.log, self.topic, self.timeout_s = log, topic, timeout_s
        self.ids: set[str] = set()
        self._consumer: Consumer = log.consumer(f"kawa-monitor-seen-{uuid.uuid4().hex[:12]}", [topic])

    def catch_up(self) -> None:
        """Read the topic up to its end as of the call."""
        from kawa.log.base import TopicPartition

        info = self.log.describe_topic(self.topic)
        ends = {TopicPartition(self.topic, p.partition): p.end_offset for p in info.partitions if p.end_offset > 0}
        consumer, deadline = self._consumer, time.monotonic() + self.timeout_s
        while any(tp not in consumer.assignment() or consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise MonitorError(f"could not read {self.topic!r} to its end within {self.timeout_s:g} s; is the "
                                   "log reachable?")  # fmt: skip
            for record in consumer.poll(timeout=0.2, max_records=5000):
                found = record.header("ce_id")
                if found is not None:
                    self.ids.add(found.decode(errors="replace"))

    def close(self) -> None:
        self._consumer.close()


class MonitorWorker:
    """One member of the monitoring consumer group (see the module docstring): :meth:`start`, then :meth:`step`
    or :meth:`run` until a stop event, then :meth:`close`.

    ``template``: the settings of every model's monitor (its ``model`` is replaced by each model's name; its
    topics and join are the worker's). ``models``: monitor only these (None: every model that has decisions;
    versions without a reference profile are counted, not tested). Holds no state the log cannot rebuild."""

    def __init__(
        self,
        log: EventLog,
        template: MonitorConfig,
        profiles: ProfilesOf,
        *,
        models: Collection[str] | None = None,
        group: str = GROUP,
        session_timeout_ms: int | None = None,
        client_id: str | None = None,
        read_timeout_s: float = 30.0,
        join_interval_s: float = 1.0,
    ) -> None:
        self.log = log
        self.template = template
        self.profiles = profiles
        self.models = frozenset(models) if models else None
        self.group = group
        self.session_timeout_ms = session_timeout_ms
        self.client_id = client_id
        self.read_timeout_s = read_timeout_s
        self.join_interval_s = join_interval_s
        self.monitors: dict[str, _Model] = {}
        self.owned: set[TopicPartition] = set()
        self.rebuilds = 0  # partitions replayed from their start (assignments and gaps)
        self.join_steps = 0  # rounds of stepping every owned model's join
        self.records = 0  # decision records processed, replays included
        self.emitted = 0
        self.invalid = 0
        self._next: dict[TopicPartition, int] = {}  # the offset expected next per owned partition
        self._committed: dict[TopicPartition, int] = {}  # the group's committed offset when it was assigned
        self._joined_at = 0.0
        self._seen: _Seen | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    def start(self) -> MonitorWorker:
        """Create the topics it needs (the decisions topic with one partition if it does not exist: create it
        with more for more workers), join the group and learn which events are already written."""
        from kawa.log.base import TopicSpec

        c = self.template
        for topic in (c.decisions_topic, c.alerts_topic, *((c.outcomes_topic,) if c.join else ())):
            self.log.create_topic(TopicSpec(topic, 1, retention_ms=None), exist_ok=True)
        self._seen = _Seen(self.log, c.alerts_topic, self.read_timeout_s)
        self._seen.catch_up()
        self._producer = self.log.producer()
        self._consumer = self.log.consumer(self.group, [c.decisions_topic], session_timeout_ms=self.session_timeout_ms,
                                           client_id=self.client_id)  # fmt: skip
        return self

    def step(self, timeout_s: float = 0.2) -> list[MonitorEvent]:
        """Poll once, follow the assignment, process the decisions read, step the joins (at most every
        ``join_interval_s``), write the new events and commit what they cover. Returns the events written."""
        if self._consumer is None or self._producer is None or self._seen is None:
            raise MonitorError("start() the monitor worker before stepping it")
        records = self._consumer.poll(timeout=timeout_s, max_records=5000)
        fresh = self._follow_assignment()
        events: list[MonitorEvent] = []
        for model, batch in self._decisions(records, fresh).items():
            events += self.monitors[model].core.add(batch)
        if self.template.join is not None and time.monotonic() - self._joined_at >= self.join_interval_s:
            self._joined_at = time.monotonic()
            for state in list(self.monitors.values()):
                if state.joiner is not None:
                    state.joiner.step()
                    events += state.core.performance()
            self.join_steps += 1
        written = self._write(events)
        self._commit()
        return written

    def run(self, stop: threading.Event, *, on_events: Callable[[list[MonitorEvent]], None] | None = None) -> None:
        """Step until ``stop`` is set."""
        while not stop.is_set():
            written = self.step()
            if on_events is not None and written:
                on_events(written)

    def close(self) -> None:
        """Leave the group (its partitions move to the other members at once) and release everything."""
        for state in self.monitors.values():
            if state.joiner is not None:
                state.joiner.close()
        self.monitors.clear()
        for closing in (self._consumer, self._seen):
            if closing is not None:
                closing.close()
        self._consumer = self._seen = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    # --- assignment ---------------------------------------------------------------------------------------------

    def _follow_assignment(self) -> set[TopicPartition]:
        """Drop the models of revoked partitions, rebuild newly assigned ones; returns the partitions whose records
        in the last poll predate the rebuild (to be ignored: the replay reads them again)."""
        assert self._consumer is not None
        current = self._consumer.assignment()
        for tp in sorted(self.owned - current):
            log.info("monitor worker: %s[%d] revoked", *tp)
            self._drop(tp)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
        added = current - self.owned
        self.owned = current
        if added:
            committed = self._consumer.committed(added)
            self._committed.update({tp: offset for tp, offset in committed.items() if offset is not None})
            self._rebuild(added)
        return added

    def _rebuild(self, partitions: Collection[TopicPartition]) -> None:
        """Replay ``partitions`` from their start with fresh monitors, after learning what is already written."""
        assert self._consumer is not None and self._seen is not None
        for tp in sorted(partitions):
            log.info("monitor worker: replaying %s[%d] from its start", *tp)
            self._drop(tp)
            self._consumer.seek_to_beginning([tp])
            self._next[tp] = self._consumer.position(tp)
            self.rebuilds += 1
        self._seen.catch_up()

    def _drop(self, tp: TopicPartition) -> None:
        for model in [m for m, state in self.monitors.items() if state.partition == tp]:
            state = self.monitors.pop(model)
            if state.joiner is not None:
                state.joiner.close()

    def _decisions(self, records: list[Record], skip: set[TopicPartition]) -> dict[str, list[DecisionRecord]]:
        """The decision records of owned partitions in ``records``, per model in log order; a partition whose
        offsets jump is rebuilt (and the rest of its records here ignored)."""
        from kawa.errors import EventError
        from kawa.log.base import TopicPartition

        out: dict[str, list[DecisionRecord]] = {}
        skip = set(skip)
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp in skip or tp not in self.owned:
                continue
            if record.offset != self._next.get(tp):
                log.info("monitor worker: %s[%d] read offset %d where %s was next", *tp, record.offset,
                         self._next.get(tp))  # fmt: skip
                for model in [m for m, state in self.monitors.items() if state.partition == tp]:
                    out.pop(model, None)
                self._rebuild([tp])
                skip.add(tp)
                continue
            self._next[tp] = record.offset + 1
            try:
                item = decode(record)
            except EventError:
                self.invalid += 1
                continue
            if not isinstance(item, DecisionRecord) or (self.models is not None and item.model not in self.models):
                continue
            self.records += 1
            if item.model not in self.monitors:
                self.monitors[item.model] = self._open(item.model, tp)
            elif self.monitors[item.model].partition != tp:
                first = self.monitors[item.model].partition.partition
                raise MonitorError(f"decisions of {item.model!r} are on two partitions ({first} and {tp.partition}) "
                                   f"of {tp.topic!r}: key decision records by their model (ctx.decide does), so "
                                   "that one member sees all of a model's decisions in order")  # fmt: skip
            out.setdefault(item.model, []).append(item)
        return out

    def _open(self, model: str, tp: TopicPartition) -> _Model:
        """A fresh monitor of ``model`` (and its join, rebuilt from its checkpoints before any decision is added,
        as :class:`~kawa.monitor.service.MonitorService` does)."""
        config = dataclasses.replace(self.template, model=model)
        core = Monitor(config, lambda version: self.profiles(model, version))
        state = _Model(tp, core)
        if config.join is not None:
            from kawa.monitor.outcomes import OutcomeJoiner

            state.joiner = OutcomeJoiner(
                self.log, config.join, decisions=config.decisions_topic, outcomes=config.outcomes_topic,
                checkpoints=f"kawa.monitor.join.{model}", accept=lambda d: d.model == model,
                on_advance=core.on_advance, read_timeout_s=self.read_timeout_s,
            ).start()  # fmt: skip
        return state

    # --- output -------------------------------------------------------------------------------------------------

    def _write(self, events: list[MonitorEvent]) -> list[MonitorEvent]:
        from kawa.events.cloudevents import to_kafka

        assert self._producer is not None and self._seen is not None and self._consumer is not None
        if not events:
            return []
        # A partition revoked while these were computed is the new owner's: its events are left to it.
        still = self._consumer.assignment()
        written = []
        for event in events:
            state = self.monitors.get(event.model)
            if event.id in self._seen.ids or state is None or state.partition not in still:
                continue
            key, value, headers = to_kafka(event.to_cloudevent())
            self._producer.produce(self.template.alerts_topic, value, key=key, headers=headers)
            self._seen.ids.add(event.id)
            written.append(event)
        self._producer.flush()
        self.emitted += len(written)
        return written

    def _commit(self) -> None:
        """Commit the owned partitions read past their committed offset (their events are acknowledged)."""
        from kawa.errors import CommitFailed

        assert self._consumer is not None
        held = self._consumer.assignment()
        ahead = {tp: n for tp, n in self._next.items() if tp in held and n > self._committed.get(tp, -1)}
        if not ahead:
            return
        try:
            self._consumer.commit(ahead)
        except CommitFailed as exc:  # the group rebalanced: the next poll shows the new assignment
            log.info("monitor worker: %s", exc)
            return
        self._committed.update(ahead)
