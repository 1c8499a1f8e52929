"""Helpers the event-log contract tests share (``test_contract*.py``)."""

from __future__ import annotations

from collections.abc import Callable

from kawa.log import EventLog, Record
from tests.log.conftest import (
    SESSION_TIMEOUT_MS,
    consume,
    consume_idle,
    unique,
    wait_assigned,
)

NewTopic = Callable[..., str]


def consumer(log: EventLog, topic: str, group: str | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    return log.consumer(group or unique("g"), [topic], session_timeout_ms=SESSION_TIMEOUT_MS, **kwargs)  # type: ignore[arg-type]


def read_all(log: EventLog, topic: str, count: int) -> list[Record]:
    """Every record of ``topic`` from the beginning, through a fresh group."""
    c = consumer(log, topic)
    try:
        return consume(c, count)
    finally:
        c.close()


def read_kept(log: EventLog, topic: str) -> list[Record]:
    """What retention left of a one-partition topic: everything a fresh group reads before it goes idle."""
    c = consumer(log, topic)
    try:
        wait_assigned(c)
        c.seek_to_beginning()
        return consume_idle(c, idle=2.0)
    finally:
        c.close()


def ends(log: EventLog, topic: str) -> list[int]:
    return [p.end_offset for p in log.describe_topic(topic).partitions]
