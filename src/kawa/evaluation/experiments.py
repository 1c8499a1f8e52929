"""Where experiments live: a compacted topic on the event log, one record per change, keyed by name.

``kawa experiments create`` appends the spec with status ``running``; ``stop`` appends the same spec with status
``stopped`` and the reason. The topic is compacted, so it keeps the newest record per experiment forever, and
every process that reads it (a function replica on another machine, the portal, the CLI) sees the same
experiments — the log is the one source of truth in both shapes, embedded and on Apache Kafka.

An experiment that was stopped stays readable (its spec and hash are what its decision records name); a new
experiment may reuse the name only after the old one stopped, and then it needs a new salt — otherwise units
would keep their old arms and the two experiments would not be independent.

:class:`ExperimentStore` writes and reads snapshots; :class:`ExperimentsView` is the request path's cached view
(a snapshot refreshed at most every ``refresh_s``, with no I/O on most calls).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.spec import ExperimentSpec

if TYPE_CHECKING:
    from kawa.log.base import Consumer, EventLog, Record

EXPERIMENTS_TOPIC = "kawa.experiments"
EXPERIMENT_EVENT = "kawa.experiment.changed"
Status = Literal["running", "stopped"]

__all__ = [
    "EXPERIMENTS_TOPIC",
    "ExperimentExists",
    "ExperimentNotFound",
    "ExperimentState",
    "ExperimentStore",
    "ExperimentsView",
    "TopicReader",
    "read_to_end",
]


class ExperimentNotFound(EvaluationError):
    """No experiment has that name."""


class ExperimentExists(EvaluationError):
    """An experiment of that name is running (or was, with the same salt)."""


@dataclass(frozen=True)
class ExperimentState:
    """One experiment as the log holds it now. ``shadow``: every arm is scored for every unit and only the
    assigned arm acts, so off-policy evaluation has all the scores. ``acting``: (shadow mode) this arm acts for
    every unit and the others are only scored — the retraining loop's shadow phase, where the candidate is never
    acted on."""

    spec: ExperimentSpec
    status: Status
    created_ms: int
    shadow: bool = False
    stopped_ms: int | None = None
    reason: str = ""
    acting: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(), "spec_hash": self.spec.spec_hash(), "status": self.status,
            "created_ms": self.created_ms, "shadow": self.shadow, "stopped_ms": self.stopped_ms,
            "reason": self.reason, "acting": self.acting,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentState:
        status = data.get("status")
        if status not in ("running", "stopped"):
            raise EvaluationError(f"an experiment record has status {status!r}; expected running or stopped")
        return cls(
            spec=ExperimentSpec.from_dict(data["spec"]), status=status, created_ms=int(data["created_ms"]),
            shadow=bool(data.get("shadow", False)), stopped_ms=data.get("stopped_ms"),
            reason=str(data.get("reason", "")), acting=data.get("acting"),
        )  # fmt: skip


class ExperimentStore:
    """Create, stop and read experiments on ``log`` (topic ``topic``, created compacted when missing)."""

    def __init__(self, log: EventLog, topic: str = EXPERIMENTS_TOPIC) -> None:
        from kawa.log.base import TopicSpec

        self.log, self.topic = log, topic
        log.create_topic(TopicSpec(topic, cleanup_policy="compact"), exist_ok=True)

    def create(self, spec: ExperimentSpec, *, shadow: bool = False, acting: str | None = None) -> ExperimentState:
        """Start ``spec``. Refused while an experiment of that name runs, and when a stopped one of that name
        used the same salt (units would keep their old arms). ``acting``: shadow mode in which that arm acts for
        every unit and the other arms are only scored."""
        if acting is not None and acting not in spec.arm_names:
            raise EvaluationError(f"experiment {spec.name!r}: the acting arm {acting!r} is not one of its arms "
                                  f"{list(spec.arm_names)}")
        states = self.snapshot()
        old = states.get(spec.name)
        if old is not None and old.running:
            raise ExperimentExists(
                f"experiment {spec.name!r} is running; stop it first (`kawa experiments stop {spec.name}`) "
                "or choose another name"
            )
        if old is not None and old.spec.salt == spec.salt:
            raise ExperimentExists(
                f"experiment {spec.name!r} ran before with salt {spec.salt!r}: give the new one another salt, so "
                "units are randomised afresh"
            )
        # Strictly after every experiment on record, so "the newest" is the one created last even when two are
        # created within one millisecond (or on a host whose clock is behind).
        created = max([_now_ms(), *(s.created_ms + 1 for s in states.values())])
        state = ExperimentState(spec, "running", created, shadow=shadow or acting is not None, acting=acting)
        self._write(state)
        return state

    def stop(self, name: str, reason: str = "stopped by a person") -> ExperimentState:
        """Stop a running experiment: it keeps its record (spec, hash, reason); assignment ends."""
        state = self.get(name)
        if not state.running:
            raise EvaluationError(f"experiment {name!r} is already stopped ({state.reason or 'no reason given'})")
        stopped = replace(state, status="stopped", stopped_ms=_now_ms(), reason=reason)
        self._write(stopped)
        return stopped

    def get(self, name: str) -> ExperimentState:
        state = self.snapshot().get(name)
        if state is None:
            raise ExperimentNotFound(
                f"no experiment named {name!r}; `kawa experiments list` shows them, "
                "`kawa experiments create FILE` starts one"
            )
        return state

    def list(self) -> list[ExperimentState]:
        """Every experiment, running first, then newest first."""
        return sorted(self.snapshot().values(), key=lambda s: (not s.running, -s.created_ms))

    def snapshot(self) -> dict[str, ExperimentState]:
        """The newest record of every experiment, read from the start of the topic to its current end."""
        reader = TopicReader(self.log, self.topic)
        try:
            return reader.catch_up({})
        finally:
            reader.close()

    def _write(self, state: ExperimentState) -> None:
        from kawa.events import new_event, to_kafka

        event = new_event(EXPERIMENT_EVENT, "kawa/experiments", state.to_dict(), subject=state.name)
        _, value, headers = to_kafka(event)
        producer = self.log.producer()
        try:
            producer.send(self.topic, value, key=state.name.encode(), headers=headers)
        finally:
            producer.close()


class ExperimentsView:
    """A process's cached view of the experiments: :meth:`get` reads the log at most every ``refresh_s``
    (a stop or a new experiment reaches the request path within that time). Thread-safe."""

    def __init__(self, log: EventLog, topic: str = EXPERIMENTS_TOPIC, *, refresh_s: float = 2.0) -> None:
        self._store = ExperimentStore(log, topic)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._reader: TopicReader | None = None
        self._states: dict[str, ExperimentState] = {}
        self._fresh_until = 0.0

    def get(self, name: str) -> ExperimentState:
        with self._lock:
            if time.monotonic() >= self._fresh_until or name not in self._states:
                self._refresh()
            state = self._states.get(name)
        if state is None:
            raise ExperimentNotFound(
                f"no experiment named {name!r} on {self._store.log.uri}; create it with `kawa experiments create`"
            )
        return state

    def running_for(self, model: str) -> ExperimentState | None:
        """The running experiment on ``model`` (the newest, should there be several), or None."""
        with self._lock:
            if time.monotonic() >= self._fresh_until:
                self._refresh()
            states = list(self._states.values())
        return _running_for(states, model)

    def _refresh(self) -> None:
        if self._reader is None:
            self._reader = TopicReader(self._store.log, self._store.topic)
        self._states = self._reader.catch_up(self._states)
        self._fresh_until = time.monotonic() + self.refresh_s

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


class TopicReader:
    """Reads a topic up to its end offsets as of the call (a consumer of its own group that never commits:
    every reader sees the whole topic); each call goes on from where the last one ended."""

    def __init__(self, log: EventLog, topic: str) -> None:
        self.log, self.topic = log, topic
        self._consumer: Consumer = log.consumer(f"kawa-reader-{uuid.uuid4().hex[:12]}", [topic])

    def records(self, timeout_s: float = 30.0) -> Iterator[Record]:
        from kawa.log.base import TopicPartition

        info = self.log.describe_topic(self.topic)
        ends = {TopicPartition(self.topic, p.partition): p.end_offset for p in info.partitions}
        deadline = time.monotonic() + timeout_s
        while any(self._behind(tp, end) for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise EvaluationError(f"could not read topic {self.topic!r} of {self.log.uri} to its end within "
                                      f"{timeout_s:g} s; is the log reachable?")
            yield from self._consumer.poll(timeout=0.2, max_records=500)

    def catch_up(self, states: dict[str, ExperimentState]) -> dict[str, ExperimentState]:
        out = dict(states)
        for record in self.records():
            if record.value is not None:  # None: a tombstone, compaction's delete marker
                out[_name(record.key)] = _state(record)
        return out

    def _behind(self, tp: Any, end: int) -> bool:
        if end == 0:
            return False
        if tp not in self._consumer.assignment():
            return True
        return self._consumer.position(tp) < end

    def close(self) -> None:
        self._consumer.close()


def _running_for(states: list[ExperimentState], model: str) -> ExperimentState | None:
    running = [s for s in states if s.running and s.spec.model == model]
    return max(running, key=lambda s: s.created_ms) if running else None


def read_to_end(log: EventLog, topic: str) -> Iterator[Record]:
    """Every record of ``topic`` from its start to its end as of the call."""
    reader = TopicReader(log, topic)
    try:
        yield from reader.records()
    finally:
        reader.close()


def _name(key: bytes | None) -> str:
    if not key:
        raise EvaluationError("an experiment record has no key; records on the experiments topic are keyed by name")
    return key.decode("utf-8")


def _state(record: Record) -> ExperimentState:
    from kawa.events import from_record

    data = from_record(record).get_data()
    if isinstance(data, bytes | str):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise EvaluationError(f"record {record.offset} of {record.topic!r} is not an experiment (no JSON object)")
    return ExperimentState.from_dict(data)


def _now_ms() -> int:
    return int(time.time() * 1000)
