"""Backends for the object-store contract suite and helpers to read notifications off the log.

``store`` runs each test on the local backend, the in-memory double, and the S3 backend against the
session's real moto_server (``s3_server``, see ``tests/fixtures/moto.py``). Every test gets its own Kawa
home; S3 tests get their own buckets and notification queue since the server lives for the session.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.config import KawaConfig
from kawa.log import EventLog, open_log
from kawa.log.base import Record
from kawa.store import ObjectStore, open_store
from tests.fixtures.moto import S3Server

BACKENDS = ["local", "memory", "s3"]


def make_config(home: Path, **store: Any) -> KawaConfig:
    return KawaConfig.model_validate({"home": str(home), "log": {"uri": "memory:"}, "store": store})


@pytest.fixture
def event_log() -> Iterator[EventLog]:
    log = open_log("memory:", make_config(Path(".kawa")))
    yield log
    log.close()


@pytest.fixture
def s3_config(s3_server: S3Server, tmp_path: Path) -> KawaConfig:
    queue = f"kawa-test-{uuid.uuid4().hex[:12]}"
    return make_config(tmp_path / ".kawa", **s3_server.store_settings(queue_name=queue))


@pytest.fixture
def open_backend(
    tmp_path: Path, event_log: EventLog, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], ObjectStore]]:
    opened: list[ObjectStore] = []

    def make(kind: str) -> ObjectStore:
        if kind == "s3":
            config = request.getfixturevalue("s3_config")
            store = open_store("s3://", config, log=event_log)
        elif kind == "memory":
            store = open_store("memory:", make_config(tmp_path / ".kawa"), log=event_log)
        else:
            store = open_store("file:", make_config(tmp_path / ".kawa"), log=event_log)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, open_backend: Callable[[str], ObjectStore]) -> ObjectStore:
    return open_backend(request.param)


@pytest.fixture
def local_store(open_backend: Callable[[str], ObjectStore]) -> ObjectStore:
    return open_backend("local")


@pytest.fixture
def s3_store(open_backend: Callable[[str], ObjectStore]) -> ObjectStore:
    return open_backend("s3")


@pytest.fixture
def bucket(store: ObjectStore) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    store.create_bucket(name)
    return name


def read_topic(log: EventLog, topic: str, want: int, timeout: float = 10.0, linger: float = 0.5) -> list[Record]:
    """Records of ``topic`` from the beginning: waits for ``want`` of them, then ``linger`` s for extras."""
    consumer = log.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic], auto_offset_reset="earliest")
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < want and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=0.1))
        end = time.monotonic() + linger
        while time.monotonic() < end:
            records.extend(consumer.poll(timeout=0.1))
    finally:
        consumer.close()
    return records


def s3_record(record: Record) -> dict[str, Any]:
    """The single S3 record inside a notification CloudEvent."""
    data = json.loads(record.value or b"{}")
    assert len(data["Records"]) == 1
    return data["Records"][0]  # type: ignore[no-any-return]
