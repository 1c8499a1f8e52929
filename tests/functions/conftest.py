"""Helpers for the function tests: fast host options, producing events, reading topics, waiting."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from kawa.events import CloudEvent, new_event, to_kafka
from kawa.functions.options import HostOptions
from kawa.log.base import EventLog, Record

FAST = HostOptions(tick_s=0.02, poll_timeout_s=0.02, commit_interval_s=0.05, drain_timeout_s=10.0)
ROOT = Path(__file__).resolve().parents[2]


def produce(log: EventLog, topic: str, events: Iterable[CloudEvent], key: bytes | None = None) -> None:
    producer = log.producer()
    for event in events:
        record_key, value, headers = to_kafka(event)
        producer.produce(topic, value, key=record_key if record_key is not None else key, headers=headers)
    producer.flush()


def events(n: int, type: str = "test.event", source: str = "/tests", **kwargs: object) -> list[CloudEvent]:
    return [new_event(type, source, {"n": i}, id=f"e{i}", **kwargs) for i in range(n)]  # type: ignore[arg-type]


def read_all(log: EventLog, topic: str, expect: int, timeout: float = 10.0) -> list[Record]:
    """Every record of ``topic`` (waiting until at least ``expect`` are there)."""
    consumer = log.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic])
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out.extend(consumer.poll(0.05, max_records=500))
            if len(out) >= expect:
                time.sleep(0.05)
                out.extend(consumer.poll(0.05, max_records=500))
                break
    finally:
        consumer.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def committed(log: EventLog, group: str, topic: str) -> dict[int, int | None]:
    return {row.partition: row.committed for row in log.lag(group, [topic])}


@pytest.fixture
def memlog() -> Iterable[EventLog]:
    from kawa.log import open_log

    log = open_log("memory:")
    yield log
    log.close()
