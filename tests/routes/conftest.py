"""Route tests: an isolated HOME (pydicom writes ~/.pydicom), a Kawa config on the embedded log and local
store under tmp_path, and helpers to run a route until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.config import KawaConfig, load_config
from kawa.routes.components.base import RouteContext
from kawa.routes.progress import ProgressStore
from kawa.routes.spec import RouteSpec
from kawa.routes.worker import RouteWorker


@pytest.fixture(autouse=True)
def _isolated_user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def config(tmp_path: Path) -> KawaConfig:
    return load_config(home=str(tmp_path / ".kawa"), store={"uri": str(tmp_path / "buckets")})


@pytest.fixture
def make_ctx(config: KawaConfig) -> Iterator[Callable[[str], RouteContext]]:
    from kawa.platform import Platform

    platform = Platform(config)
    progress = ProgressStore(config.path("routes", "progress.db"))
    made: list[RouteContext] = []

    def make(route_id: str) -> RouteContext:
        ctx = RouteContext(route_id=route_id, config=config, progress=progress, backends=platform.backends)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.stop.set()
    progress.close()
    platform.stop()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def start(spec: RouteSpec, ctx: RouteContext) -> RouteWorker:
    worker = RouteWorker(spec, ctx, idle_poll_s=0.05)
    worker.start()
    return worker


def read_topic(ctx: RouteContext, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Every record of ``topic`` (a fresh group), waiting until at least ``expected`` arrived."""
    import uuid

    from kawa.log.base import TopicSpec

    log = ctx.log
    log.create_topic(TopicSpec(topic), exist_ok=True)
    consumer = log.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=0.2, max_records=5000))
            if len(records) >= expected:
                # one more short poll to catch anything beyond the expected count
                records.extend(consumer.poll(timeout=0.1, max_records=5000))
                break
    finally:
        consumer.close()
    return records
