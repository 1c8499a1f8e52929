"""Events of a topic as a live stream, each counted once: follows a topic an app declares and keeps its
recent events (id, time, data) distinct by CloudEvent id, for the board's tables, time series and image
markers. Works on every log backend and across processes, because an app's events are its public output.

The tail is a consumer in its own group that never commits: on start it seeks back ``history_s`` so the
board shows the recent past at once. A redelivered event (same id) is kept once, so no count on the board
can exceed the number of distinct events.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kawa.errors import EventError, KawaError, TopicNotFound
from kawa.events import EventRef, from_record
from kawa.events.schemas import read_data, schema_for
from kawa.log.base import Consumer, EventLog, Record

ALIASES: dict[str, tuple[str, ...]] = {
    # Older result events call the model version ``version``; newer ones ``model_version``.
    "model_version": ("version",),
    "version": ("model_version",),
}


def field_value(data: Mapping[str, Any], name: str) -> Any:
    """``data[name]``, or the value under one of its aliases."""
    value = data.get(name)
    if value is None:
        for alias in ALIASES.get(name, ()):
            if data.get(alias) is not None:
                return data[alias]
    return value


@dataclass(frozen=True)
class EventRow:
    id: str
    time: float  # epoch seconds: the event's own time (data ``time``/``timestamp``, else its CloudEvent time)
    data: Mapping[str, Any] = field(default_factory=dict)
    received: float = 0.0  # epoch seconds the log stored it (a replay of history: now, not then)


def _time_s(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def parse_event(record: Record) -> EventRow | None:
    """The event of ``record`` with its data as a mapping (None when the record is not a CloudEvent whose
    data is a JSON object)."""
    try:
        event = from_record(record)
    except EventError:
        return None
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if not isinstance(data, Mapping):
        return None
    schema = schema_for(str(event.get_type()))  # the declared schema of the type: one shape for every reader
    if schema is not None:
        with contextlib.suppress(EventError):  # an event older than its schema keeps the fields it has
            data = read_data(schema, data).data()
    fallback = record.timestamp_ms / 1000.0 if record.timestamp_ms else time.time()
    stamp = _time_s(data.get("time")) or _time_s(data.get("timestamp"))
    if stamp is None:
        attr: Any = event.get_attributes().get("time")
        stamp = attr.timestamp() if hasattr(attr, "timestamp") else _time_s(attr)
    return EventRow(id=EventRef.of(event).key(), time=stamp or fallback, data=dict(data), received=fallback)


class EventTail:
    """The recent distinct events of ``topic``. :meth:`poll` is called from one thread (the sampler);
    :meth:`snapshot` from any."""

    def __init__(self, log: EventLog, topic: str, group: str, *, history_s: float = 3600.0, keep: int = 20_000) -> None:
        self.log, self.topic, self.group = log, topic, group
        self.history_s, self.keep = history_s, keep
        self._rows: OrderedDict[str, EventRow] = OrderedDict()
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self.error: str | None = None

    def poll(self, max_records: int = 2000) -> int:
        """Read what arrived since the last call (non-blocking). Returns the number of new distinct events."""
        if self._consumer is None and not self._attach():
            return 0
        assert self._consumer is not None
        added = 0
        try:
            for _ in range(20):  # at most 20 batches per call: the sampler must not fall behind its tick
                batch = self._consumer.poll(timeout=0.0, max_records=max_records)
                rows = [row for row in (parse_event(r) for r in batch) if row is not None]
                with self._lock:
                    for row in rows:
                        if row.id not in self._rows:
                            self._rows[row.id] = row
                            added += 1
                    while len(self._rows) > self.keep:
                        self._rows.popitem(last=False)
                if len(batch) < max_records:
                    break
        except KawaError as exc:
            self.error = str(exc)
            self.close()
        return added

    def _attach(self) -> bool:
        try:
            self.log.describe_topic(self.topic)
        except TopicNotFound:
            self.error = f"topic {self.topic!r} does not exist yet"
            return False
        consumer = self.log.consumer(self.group, [self.topic], auto_offset_reset="latest")
        since_ms = int((time.time() - self.history_s) * 1000)
        deadline = time.monotonic() + 5.0
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout=0.05, max_records=1)
        consumer.seek_to_time(since_ms)
        self._consumer, self.error = consumer, None
        return True

    def snapshot(self) -> tuple[EventRow, ...]:
        """The distinct events held now, in arrival order (oldest first)."""
        with self._lock:
            return tuple(self._rows.values())

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
