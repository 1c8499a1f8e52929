"""Results as a live stream: follows a topic of result events (the X-ray app's ``xray-results``) and keeps
the recent rows and time-bucketed aggregates the board draws. Works on every log backend and across
processes, because result events are the app's public output. Each event is read with its app's schema
(:class:`ResultData`), registered with :func:`kawa.events.schemas.register_schema` or given to the tail.

The tail is a consumer in its own group that never commits: on start it seeks back ``history_s`` so the
board shows the recent past at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

from kawa.errors import EventError, KawaError, TopicNotFound
from kawa.events import from_record
from kawa.events.ref import EventRef
from kawa.events.schemas import EventSchema, read_data, schema_for
from kawa.log.base import Consumer, EventLog, Record


class ResultData(Protocol):
    """What the tail reads from a result event: the fields a result schema declares (the X-ray app's
    ``XrayAssessed`` is one). An app's result events are read with its own schema, never by guessing."""

    @property
    def event(self) -> EventRef | None: ...
    @property
    def key(self) -> str: ...
    @property
    def processed_key(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def model_version(self) -> int: ...
    @property
    def risk(self) -> float: ...
    @property
    def label(self) -> str: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def e2e_ms(self) -> float | None: ...
    @property
    def time(self) -> float: ...


_FIELDS = frozenset(
    name for name in dir(ResultData) if not name.startswith("_") and isinstance(getattr(ResultData, name), property)
)


@dataclass(frozen=True)
class ResultRow:
    """One result as the board shows it. ``event_source`` + ``event_id``: the :class:`~kawa.events.EventRef` of
    the input event the result is about (None for results emitted before results carried it)."""

    time: float  # epoch seconds
    object: str | None
    processed_key: str | None
    model: str | None
    version: int | None
    risk: float | None
    label: str | None
    latency_ms: float | None  # inside the function
    event_id: str | None = None
    e2e_ms: float | None = None  # upload to result, when the event carries it
    event_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, result: ResultData) -> ResultRow:
        ref = result.event
        return cls(
            time=_time_s(result.time),
            object=result.key,
            processed_key=result.processed_key,
            model=result.model,
            version=result.model_version,
            risk=_finite(result.risk),
            label=result.label,
            latency_ms=_finite(result.latency_ms),
            event_id=None if ref is None else ref.id,
            e2e_ms=_finite(result.e2e_ms),
            event_source=None if ref is None else ref.source,
        )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _time_s(value: float) -> float:
    return value / 1000.0 if value > 1e11 else value  # epoch milliseconds from a producer that writes them


def parse_result(record: Record, schema: type[EventSchema] | None = None) -> ResultRow | None:
    """A result row from a result event, read with ``schema`` (by default the schema registered for the
    event's type); None when the record is not a result event of a known schema or does not match it."""
    try:
        event = from_record(record)
    except EventError:
        return None
    schema = schema or schema_for(str(event.get_type()))
    if schema is None or not set(schema.model_fields) >= _FIELDS:
        return None
    try:
        result = read_data(schema, event.get_data())
    except EventError:
        return None
    return ResultRow.of(cast(ResultData, result))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class ResultsTail:
    """The recent result rows of ``topic``. :meth:`poll` is called from one thread (the sampler)."""

    def __init__(
        self,
        log: EventLog,
        topic: str,
        group: str,
        *,
        schema: type[EventSchema] | None = None,
        history_s: float = 3600.0,
        keep: int = 20_000,
    ) -> None:
        self.log, self.topic, self.group = log, topic, group
        self.schema = schema  # None: the schema registered for each event's type
        self.history_s = history_s
        self._rows: deque[ResultRow] = deque(maxlen=keep)
        self._by_label: Counter[str] = Counter()  # every row seen since the tail started (monotonic)
        self._by_version: Counter[str] = Counter()
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()
        self.error: str | None = None

    def poll(self, max_records: int = 2000) -> int:
        """Read what arrived since the last call (non-blocking). Returns the number of new rows."""
        if self._consumer is None and not self._attach():
            return 0
        assert self._consumer is not None
        added = 0
        try:
            for _ in range(20):  # at most 20 batches per call: the sampler must not fall behind its tick
                batch = self._consumer.poll(timeout=0.0, max_records=max_records)
                rows = [row for row in (parse_result(r, self.schema) for r in batch) if row is not None]
                if rows:
                    with self._lock:
                        self._rows.extend(rows)
                        self._by_label.update(r.label or "unknown" for r in rows)
                        self._by_version.update(version_label(r) for r in rows)
                    added += len(rows)
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

    def rows(self, limit: int = 50) -> list[ResultRow]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._rows))[:limit]

    def all_rows(self) -> list[ResultRow]:
        with self._lock:
            return list(self._rows)

    def counts(self) -> dict[str, Counter[str]]:
        """Rows per label and per model version since the tail started (it starts ``history_s`` back)."""
        with self._lock:
            return {"label": Counter(self._by_label), "version": Counter(self._by_version)}

    def first_time(self, since: float) -> float | None:
        """The time of the oldest kept result at or after ``since``."""
        with self._lock:
            return next((r.time for r in self._rows if r.time >= since), None)

    def timeline(self, bucket_s: float = 10.0, span_s: float = 600.0, now: float | None = None) -> list[dict[str, Any]]:
        """Per time bucket (oldest first): counts by label and by model version, risk histogram, latency."""
        now = time.time() if now is None else now
        with self._lock:
            first = next((r.time for r in self._rows if r.time >= now - span_s), now)
            # Start at the first result of the span (not span_s ago): a young pipeline fills the chart.
            start = math.floor(max(now - span_s, first - 2 * bucket_s) / bucket_s) * bucket_s
            rows = [r for r in self._rows if r.time >= start]
        buckets: dict[float, list[ResultRow]] = {}
        for row in rows:
            buckets.setdefault(math.floor(row.time / bucket_s) * bucket_s, []).append(row)
        out = []
        t = start
        while t <= now:
            group = buckets.get(t, [])
            latencies = [r.latency_ms for r in group if r.latency_ms is not None]
            e2e = [r.e2e_ms for r in group if r.e2e_ms is not None]
            risks = [r.risk for r in group if r.risk is not None]
            out.append(
                {
                    "t": t,
                    "count": len(group),
                    "labels": dict(Counter(r.label or "unknown" for r in group)),
                    "versions": dict(Counter(version_label(r) for r in group)),
                    "risk_histogram": risk_histogram(risks),
                    "latency_p50_ms": percentile(latencies, 0.5),
                    "latency_p99_ms": percentile(latencies, 0.99),
                    "e2e_p50_ms": percentile(e2e, 0.5),
                    "e2e_p99_ms": percentile(e2e, 0.99),
                }
            )
            t += bucket_s
        return out

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None


def version_label(row: ResultRow) -> str:
    if row.version is None:
        return "unknown"
    return f"{row.model} v{row.version}" if row.model else f"v{row.version}"


def risk_histogram(risks: list[float], bins: int = 10) -> list[int]:
    counts = [0] * bins
    for risk in risks:
        counts[min(bins - 1, max(0, int(risk * bins)))] += 1
    return counts
