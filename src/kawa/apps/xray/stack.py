"""Everything the X-ray pipeline needs on one platform: set-up, the model, the running parts, the counts.

:class:`XrayStack` is what ``kawa demo xray``, the tests and the benchmark drive. It starts the app the way
the platform starts any app (:func:`kawa.apps.runtime.start_app`: its declared buckets, topics and
notification, its function and its route) and reads the counts. Embedded shape: the ``risk-assessment``
function and the de-identification route run in this process. Distributed shape (``host=False``):
``kawa worker`` processes run the function on Kafka while this process prepares what the app declares,
runs the route (unless ``route=False``) and reads the counts.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.apps.runtime import prepare_app, start_app, stop_app
from kawa.apps.xray.pipeline import FUNCTION, build_app
from kawa.apps.xray.plugin import declare
from kawa.apps.xray.results import ResultsDB
from kawa.apps.xray.settings import XraySettings
from kawa.errors import ModelAliasNotFound, ModelNotFound, TopicNotFound
from kawa.log import TopicPartition
from kawa.platform import Platform
from kawa.store import iter_objects

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.functions import FunctionHost, HostOptions
    from kawa.log import Consumer, EventLog
    from kawa.routes import RouteRunner

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Counts:
    """A snapshot of the pipeline, each number read from where it lives (buckets, topics, results table)."""

    uploaded: int
    processed: int
    anonymized: int
    dead_lettered: int  # by the risk-assessment function
    deid_dead_lettered: int  # by the de-identification route
    results: int
    labels: dict[str, int] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)
    e2e_p50_ms: float | None = None
    e2e_p99_ms: float | None = None
    replicas: int = 0
    function_p99_ms: float | None = None
    rate_per_s: float = 0.0


class DeadLetters:
    """The distinct events dead-lettered on ``topic`` since this object was made (or since the offsets
    ``since`` names; ``{}``: from the beginning): a dead letter delivered
    twice (the same CloudEvent id, e.g. redelivered after a crash) counts once.

    Reads the topic as its own throw-away consumer group (never committed, so it leaves nothing behind) and
    catches up a little on each :meth:`count`; polled until a condition holds, it converges."""

    def __init__(self, log: EventLog, topic: str, *, since: dict[int, int] | None = None) -> None:
        self.log = log
        self.topic = topic
        self._since = self._ends() if since is None else since  # partition -> first offset counted
        self._ids: set[bytes] = set()
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    def _ends(self) -> dict[int, int]:
        try:
            info = self.log.describe_topic(self.topic)
        except TopicNotFound:
            return {}
        return {p.partition: p.end_offset for p in info.partitions}

    def count(self, max_polls: int = 20) -> int:
        with self._lock:
            if self._consumer is None:
                group = f"kawa-xray-counts-{uuid.uuid4().hex[:12]}"
                self._consumer = self.log.consumer(group, [self.topic], auto_offset_reset="earliest")
            for _ in range(max_polls):
                batch = self._consumer.poll(timeout=0.05, max_records=2000)
                for record in batch:
                    if record.offset >= self._since.get(record.partition, 0):
                        self._ids.add(record.header("ce_id") or f"{record.partition}:{record.offset}".encode())
                if not batch and self._caught_up():
                    break
            return len(self._ids)

    def _caught_up(self) -> bool:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for partition, end in self._ends().items():
            tp = TopicPartition(self.topic, partition)
            if end > self._since.get(partition, 0) and (tp not in assigned or self._consumer.position(tp) < end):
                return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


class XrayStack:
    """The X-ray pipeline on a platform: the one given (which it leaves running), or one on ``config``'s
    backends (which it stops). Use as a context manager or start/stop."""

    def __init__(
        self,
        config: KawaConfig | Platform,
        settings: XraySettings | None = None,
        *,
        host: bool = True,
        route: bool = True,
        host_options: HostOptions | None = None,
    ) -> None:
        self._owns_platform = not isinstance(config, Platform)
        self.platform = config if isinstance(config, Platform) else Platform(config)
        self.config = self.platform.config
        self.settings = s = settings or XraySettings()
        self.declared = declare(s)
        self.results_url = s.results_url(self.config.home)
        self.app = build_app(s, results_db=self.results_url)
        self._host_enabled = host
        self._route_enabled = route
        self._host_options = host_options
        self.host: FunctionHost | None = None
        self.route: RouteRunner | None = None
        self._results: ResultsDB | None = None
        self._dead_letters: dict[str, DeadLetters] = {}

    # --- set-up ------------------------------------------------------------------------------------

    @property
    def store(self) -> Any:
        return self.platform.store

    @property
    def log(self) -> Any:
        return self.platform.log

    @property
    def results(self) -> ResultsDB:
        if self._results is None:
            self._results = ResultsDB(self.results_url)
        return self._results

    def prepare(self) -> None:
        """Create the buckets, topics and the bucket notification (idempotent)."""
        s = self.settings
        prepare_app(self.platform.backends, self.declared)
        self.results.count()  # creates the table
        self._close_dead_letters()
        self._dead_letters = {t: DeadLetters(self.log, t) for t in (s.dead_letter_topic, s.deid_dead_letter_topic)}

    def _close_dead_letters(self) -> None:
        for reader in self._dead_letters.values():
            reader.close()
        self._dead_letters = {}

    def model_version(self) -> int | None:
        """The version ``settings.model_ref`` points to, or None when there is none yet."""
        from kawa.ml.registry import Registry

        registry = Registry(self.config, publish=False)
        try:
            return registry.resolve(self.settings.model_ref)
        except (ModelNotFound, ModelAliasNotFound):
            return None
        finally:
            registry.close()

    def ensure_model(self, progress: Progress | None = None, *, images: int | None = None) -> dict[str, Any] | None:
        """Train and promote a model (as a Kawa job) when the alias points nowhere; the job's result, or
        None when a model was already there."""
        if self.model_version() is not None:
            return None
        from kawa.apps.xray.jobs import run_training_job

        return run_training_job(self.config, self.settings, progress=progress, images=images)

    # --- running -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare, then host the function and run the de-identification route (each unless switched off:
        in the distributed shape ``kawa worker`` processes host the function)."""
        self.prepare()
        running = start_app(
            self.platform,
            self.declared,
            functions=self._host_enabled,
            routes=self._route_enabled,
            host_options=self._host_options,
        )  # in platform.apps: the portal shows its board
        self.host, self.route = running.functions, running.routes

    def stop(self) -> None:
        stop_app(self.platform, self.declared.name)
        self.host = self.route = None
        from kawa.apps.xray.results import close_shared

        self._close_dead_letters()
        close_shared()
        if self._results is not None:
            self._results.close()
            self._results = None
        if self._owns_platform:
            self.platform.stop()

    def __enter__(self) -> XrayStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- reading -----------------------------------------------------------------------------------

    def object_count(self, bucket: str, prefix: str = "") -> int:
        return sum(1 for _ in iter_objects(self.store, bucket, prefix))

    def topic_size(self, topic: str) -> int:
        try:
            info = self.log.describe_topic(topic)
        except TopicNotFound:
            return 0
        return sum(p.end_offset - p.start_offset for p in info.partitions)

    def dead_lettered(self, topic: str) -> int:
        """Distinct events dead-lettered on ``topic`` since :meth:`prepare` (a redelivered one counts once)."""
        reader = self._dead_letters.get(topic)
        if reader is None:
            reader = self._dead_letters[topic] = DeadLetters(self.log, topic, since={})  # not prepared: all
        return reader.count()

    def counts(self, prefix: str = "") -> Counts:
        """Objects under ``prefix`` in each bucket, their result rows, and dead letters since :meth:`prepare`.

        Read downstream first (rows, then outputs, then uploads), so that a snapshot taken while images flow
        shows uploaded >= processed >= rows rather than the reverse."""
        s = self.settings
        summary = self.results.summary(prefix)
        processed = self.object_count(s.processed_bucket, prefix)
        anonymized = self.object_count(s.anonymized_bucket, prefix)
        replicas, p99, rate = 0, None, 0.0
        if self.host is not None:
            stats = self.host.metrics().get(f"{self.app.name}.{FUNCTION}")
            if stats is not None:
                replicas, p99, rate = stats.replicas, stats.latency_p99_ms, stats.rate_per_s
        return Counts(
            uploaded=self.object_count(s.incoming_bucket, prefix),
            processed=processed,
            anonymized=anonymized,
            dead_lettered=self.dead_lettered(s.dead_letter_topic),
            deid_dead_lettered=self.dead_lettered(s.deid_dead_letter_topic),
            results=summary["count"],
            labels=summary["labels"],
            versions=summary["versions"],
            e2e_p50_ms=summary["e2e_p50_ms"],
            e2e_p99_ms=summary["e2e_p99_ms"],
            replicas=replicas,
            function_p99_ms=p99,
            rate_per_s=rate,
        )

    def wait_until(
        self, done: Callable[[Counts], bool], timeout: float, poll_s: float = 0.25, prefix: str = ""
    ) -> Counts:
        """Poll :meth:`counts` until ``done`` holds or ``timeout`` passes; returns the last counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts(prefix)
            if done(counts) or time.monotonic() >= deadline:
                return counts
            time.sleep(poll_s)
