"""Backends for the event-log contract suite: every test that takes ``log`` runs on each of them.

The Kafka parameter uses the session's real broker (``kafka_bootstrap``); topic and group names carry a
random suffix so tests share it safely.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kawa.config import KawaConfig, LogConfig
from kawa.errors import TopicNotFound
from kawa.log import EventLog, TopicSpec, open_log
from kawa.log.base import Consumer, Record

BACKENDS = ["embedded", "memory", pytest.param("kafka", marks=pytest.mark.kafka)]
LOCAL_BACKENDS = ["embedded", "memory"]

# Small segments, so that retention and compaction have closed segments to work on within a test.
SEGMENT_BYTES = 4096
KAFKA_TOPIC_CONFIG = {
    "segment.ms": "300",  # a segment closes with the first record 300 ms after its first one
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "60000",
}
# Kafka group joins are paced by the session timeout; keep it short in tests.
SESSION_TIMEOUT_MS = 6000


_made: list[str] = []


def unique(prefix: str) -> str:
    """A name no other test (or test session on the shared broker) uses."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    _made.append(name)
    return name


@pytest.fixture
def log_config(tmp_path: Path) -> KawaConfig:
    return KawaConfig(home=tmp_path / ".kawa", log=LogConfig(segment_bytes=SEGMENT_BYTES))


def make_log(backend: str, request: pytest.FixtureRequest, path: Path, config: KawaConfig) -> EventLog:
    if backend == "embedded":
        return open_log(f"embedded:{path}", config)
    if backend == "memory":
        return open_log("memory:", config)
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    return open_log(f"kafka://{bootstrap}", config, topic_config=KAFKA_TOPIC_CONFIG)


@pytest.fixture(params=BACKENDS)
def log(request: pytest.FixtureRequest, tmp_path: Path, log_config: KawaConfig) -> Iterator[EventLog]:
    opened = make_log(request.param, request, tmp_path / "log", log_config)
    _made.clear()
    yield opened
    if request.param == "kafka":  # the broker outlives the test: drop the topics it made
        for name in set(opened.list_topics()) & set(_made):
            with contextlib.suppress(TopicNotFound):
                opened.delete_topic(name)
    opened.close()


@pytest.fixture(params=LOCAL_BACKENDS)
def local_log(request: pytest.FixtureRequest, tmp_path: Path, log_config: KawaConfig) -> Iterator[EventLog]:
    """The in-process backends, for hypothesis tests (many examples; Kafka is covered by examples)."""
    opened = make_log(request.param, request, tmp_path / "log", log_config)
    yield opened
    opened.close()


@pytest.fixture
def new_topic(log: EventLog) -> Callable[..., str]:
    """``new_topic(partitions=1, **spec)`` creates a topic with a unique name and returns the name."""

    def create(partitions: int = 1, prefix: str = "t", **spec: object) -> str:
        name = unique(prefix)
        log.create_topic(TopicSpec(name, partitions, **spec))  # type: ignore[arg-type]
        return name

    return create


def backend_of(log: EventLog) -> str:
    return "kafka" if log.uri.startswith("kafka://") else "memory" if log.uri.startswith("memory:") else "embedded"


def consume(consumer: Consumer, count: int, timeout: float = 20.0) -> list[Record]:
    """Poll until ``count`` records arrived (never more: ``max_records`` shrinks), or fail after ``timeout``."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"got {len(records)} of {count} records within {timeout}s")
        records += consumer.poll(0.2, max_records=count - len(records))
    return records


def consume_idle(consumer: Consumer, idle: float = 1.0, timeout: float = 30.0) -> list[Record]:
    """Poll until nothing arrives for ``idle`` seconds; everything that came."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle and time.monotonic() < deadline:
        batch = consumer.poll(0.2)
        if batch:
            records += batch
            quiet_since = time.monotonic()
    return records


def wait_assigned(consumer: Consumer, timeout: float = 30.0) -> list[Record]:
    """Poll until the consumer has partitions (records that arrive meanwhile are returned, not lost)."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while not consumer.assignment():
        if time.monotonic() > deadline:
            pytest.fail(f"consumer of group {consumer.group!r} got no partitions within {timeout}s")
        records += consumer.poll(0.1)
    return records


def eventually(check: Callable[[], bool], log: EventLog, timeout: float = 30.0, what: str = "condition") -> None:
    """Run maintenance (embedded/memory) or let the broker work (Kafka) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        maintain = getattr(log, "maintain", None)
        if maintain is not None:
            maintain()
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s")
        time.sleep(0.2)
