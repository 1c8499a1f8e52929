"""Function metrics: counters, gauges, rates and latency percentiles, read as immutable snapshots.

The host updates a :class:`FunctionMetrics` from its dispatch thread; readers (the portal, ``kawa worker``
logs, tests) call :meth:`FunctionMetrics.snapshot`, which is safe from any thread. A process replica keeps a
:class:`ReportingMetrics` and sends :meth:`ReportingMetrics.report` deltas to its host, which adds them to
the function's metrics with :meth:`FunctionMetrics.absorb`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


class LatencyWindow:
    """The most recent ``size`` samples (seconds); percentiles over them."""

    def __init__(self, size: int = 4096) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def percentiles(self, *qs: float) -> list[float | None]:
        values = sorted(self._values)
        if not values:
            return [None for _ in qs]
        n = len(values)
        return [values[min(n - 1, max(0, math.ceil(q * n) - 1))] for q in qs]


class RateMeter:
    """Events per second over the last ``window_s`` seconds (one-second buckets)."""

    def __init__(self, window_s: int = 10) -> None:
        self._window = window_s
        self._buckets: deque[list[float]] = deque()  # [second, count]

    def add(self, count: int = 1, now: float | None = None) -> None:
        second = math.floor(time.monotonic() if now is None else now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
            while self._buckets and self._buckets[0][0] <= second - self._window:
                self._buckets.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        start = now - self._window
        total = sum(count for second, count in self._buckets if second + 1 > start)
        return total / self._window


@dataclass(frozen=True)
class FunctionStats:
    """A snapshot of one function's metrics (latencies in milliseconds, None before the first event)."""

    app: str
    function: str
    topic: str
    group: str
    replicas: int
    desired_replicas: int
    panicking: bool
    in_flight: int
    queued: int
    received: int
    succeeded: int
    failed_attempts: int
    retries: int
    dead_lettered: int
    filtered: int
    duplicates: int
    rate_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    end_to_end_p99_ms: float | None
    scale_events: int
    skipped_foreign: int = 0  # records of a bucket the trigger does not name (never processed)
    custom: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UserMetrics:
    """What a handler records through ``ctx.metrics``: counters (``incr``) and gauges (``set``)."""

    def __init__(self) -> None:
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()

    def incr(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0.0) + value

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = float(value)

    def replace(self, values: dict[str, float]) -> None:
        with self._lock:
            self._values = dict(values)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


class FunctionMetrics:
    """Live metrics of one function."""

    def __init__(self, app: str, function: str, topic: str, group: str) -> None:
        self.app, self.function, self.topic, self.group = app, function, topic, group
        self.replicas = 0
        self.desired_replicas = 0
        self.panicking = False
        self.in_flight = 0
        self.queued = 0
        self.received = 0
        self.succeeded = 0
        self.failed_attempts = 0
        self.retries = 0
        self.dead_lettered = 0
        self.filtered = 0
        self.duplicates = 0
        self.skipped_foreign = 0
        self.scale_events = 0
        self.latency = LatencyWindow()
        self.end_to_end = LatencyWindow()
        self.rate = RateMeter()
        self.user = UserMetrics()
        self._lock = threading.Lock()

    def add(self, name: str, count: int = 1) -> None:
        """Add to a counter from any thread."""
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def finished(self, handler_s: float, end_to_end_s: float | None) -> None:
        with self._lock:
            self.latency.add(handler_s)
            if end_to_end_s is not None:
                self.end_to_end.add(end_to_end_s)
            self.rate.add()

    def absorb(self, report: dict[str, Any]) -> None:
        """Add a :meth:`ReportingMetrics.report` of a process replica (counters, latency samples)."""
        with self._lock:
            for name, delta in report["counters"].items():
                if name in COUNTERS:
                    setattr(self, name, getattr(self, name) + int(delta))
            for seconds in report["latency"]:
                self.latency.add(seconds)
                self.rate.add()
            for seconds in report["end_to_end"]:
                self.end_to_end.add(seconds)

    def snapshot(self) -> FunctionStats:
        with self._lock:
            p50, p99 = self.latency.percentiles(0.5, 0.99)
            (e2e,) = self.end_to_end.percentiles(0.99)
            rate = self.rate.rate()
        return FunctionStats(
            app=self.app, function=self.function, topic=self.topic, group=self.group,
            replicas=self.replicas, desired_replicas=self.desired_replicas, panicking=self.panicking,
            in_flight=self.in_flight, queued=self.queued, received=self.received, succeeded=self.succeeded,
            failed_attempts=self.failed_attempts, retries=self.retries, dead_lettered=self.dead_lettered,
            filtered=self.filtered, duplicates=self.duplicates, rate_per_s=round(rate, 3),
            latency_p50_ms=_ms(p50), latency_p99_ms=_ms(p99), end_to_end_p99_ms=_ms(e2e),
            scale_events=self.scale_events, skipped_foreign=self.skipped_foreign, custom=self.user.snapshot(),
        )


COUNTERS = (
    "received", "succeeded", "failed_attempts", "retries", "dead_lettered", "filtered", "duplicates",
    "skipped_foreign",
)


class ReportingMetrics(FunctionMetrics):
    """The metrics of a process replica: what changed since the last :meth:`report` goes to the host."""

    def __init__(self, app: str, function: str, topic: str, group: str) -> None:
        super().__init__(app, function, topic, group)
        self._sent = dict.fromkeys(COUNTERS, 0)
        self._latency_samples: list[float] = []
        self._e2e_samples: list[float] = []

    def finished(self, handler_s: float, end_to_end_s: float | None) -> None:
        super().finished(handler_s, end_to_end_s)
        with self._lock:
            self._latency_samples.append(handler_s)
            if end_to_end_s is not None:
                self._e2e_samples.append(end_to_end_s)

    def report(self) -> dict[str, Any]:
        """Counter deltas and latency samples since the last report, the gauges, the handler's own metrics."""
        with self._lock:
            now = {name: int(getattr(self, name)) for name in COUNTERS}
            counters = {name: now[name] - self._sent[name] for name in COUNTERS if now[name] != self._sent[name]}
            self._sent = now
            latency, self._latency_samples = self._latency_samples, []
            e2e, self._e2e_samples = self._e2e_samples, []
        return {
            "counters": counters, "latency": latency, "end_to_end": e2e, "in_flight": self.in_flight,
            "queued": self.queued, "user": self.user.snapshot(),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)
