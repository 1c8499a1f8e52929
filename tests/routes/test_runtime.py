"""The route runtime: redelivery and dead letters, bad input, routes added and removed at runtime, and a
SIGKILLed route worker that resumes without loss or duplicates."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kawa.deadletter import read_reason
from kawa.events import from_record, new_event, to_kafka
from kawa.log.base import TopicSpec
from kawa.routes.components.base import RouteContext
from kawa.routes.registry import RouteRegistry
from kawa.routes.spec import load_routes, route
from tests.routes.conftest import read_topic, start, wait_for

Ctx = Callable[[str], RouteContext]

FLAKY_CALLS: dict[str, int] = {}


def flaky(body: dict[str, int]) -> dict[str, int]:
    """Fails twice for every message, then succeeds; n == 13 always fails."""
    key = str(body["n"])
    FLAKY_CALLS[key] = FLAKY_CALLS.get(key, 0) + 1
    if body["n"] == 13 or FLAKY_CALLS[key] <= 2:
        raise RuntimeError(f"transient failure for {key}")
    return {**body, "ok": True}


def _produce(ctx: RouteContext, topic: str, items: list[dict[str, object]], partitions: int = 1) -> None:
    ctx.log.create_topic(TopicSpec(topic, partitions=partitions), exist_ok=True)
    producer = ctx.log.producer()
    for i, item in enumerate(items):
        _key, value, headers = to_kafka(new_event("t", "/test", item, id=f"{topic}-{i}"))
        producer.produce(topic, value, key=str(i).encode(), headers=headers)
    producer.flush()
    producer.close()


def test_redelivery_then_dead_letter_with_reason(make_ctx: Ctx) -> None:
    FLAKY_CALLS.clear()
    ctx = make_ctx("flaky")
    _produce(ctx, "flaky-in", [{"n": n} for n in range(12, 15)])
    spec = route(
        "flaky",
        "topic:flaky-in",
        [{"map": "tests.routes.test_runtime:flaky"}],
        "topic:flaky-out",
        errors={"dead-letter": "topic:flaky.dlq", "max-redeliveries": 3, "backoff": "exponential", "delay": 0.01},
    )
    worker = start(spec, ctx)
    try:
        out = read_topic(ctx, "flaky-out", 2)
        dead = read_topic(ctx, "flaky.dlq", 1)
    finally:
        worker.stop()
    assert sorted(from_record(r).get_data()["n"] for r in out) == [12, 14]
    assert len(dead) == 1
    event = from_record(dead[0])
    assert event.get_data() == {"n": 13}  # the original message, for a later re-drive
    assert "transient failure for 13" in event.get_attributes()["kawadlqmessage"]
    assert event.get_attributes()["kawadlqattempts"] == "4"
    why = read_reason(dead[0].headers)  # the one schema, also as plain kawa-dlq-* headers
    assert why is not None and (why.reason, why.kind, why.component) == ("handler-error", "route", "flaky")
    assert why.source_topic == "flaky-in" and dead[0].header("kawa-dlq-attempts") == b"4"
    assert FLAKY_CALLS["13"] == 4 and FLAKY_CALLS["12"] == 3


def test_undecodable_dicom_and_csv_rows_are_dead_lettered_and_the_route_goes_on(tmp_path: Path, make_ctx: Ctx) -> None:
    from kawa.routes.message import dicom_bytes
    from tests.routes.test_deid import _planted

    inbox = tmp_path / "dicom-in"
    inbox.mkdir()
    (inbox / "a-broken.dcm").write_bytes(b"\x00" * 200 + b"garbage")
    (inbox / "b-good.dcm").write_bytes(dicom_bytes(_planted("1.2.3.55", "1.2.3.55.1")))
    spec = route(
        "dicom",
        {"uri": f"file:{inbox}", "settle": "0s", "interval": "50ms"},
        [{"dicom-deidentify": {}}],
        f"file:{tmp_path / 'dicom-out'}",
        errors={"dead-letter": f"file:{tmp_path / 'dicom-dlq'}"},
    )
    worker = start(spec, make_ctx("dicom"))
    try:
        wait_for(lambda: (tmp_path / "dicom-out" / "b-good.dcm").exists())
        wait_for(lambda: worker.stats.dead_lettered == 1)
    finally:
        worker.stop()
    assert (tmp_path / "dicom-dlq" / "a-broken.dcm").read_bytes().endswith(b"garbage")
    reason = json.loads((tmp_path / "dicom-dlq" / "a-broken.dcm.error.json").read_text())
    assert "not a readable DICOM file" in reason["message"] and reason["attempts"] == 1

    rows = tmp_path / "rows.csv"
    rows.write_bytes(b"id,amount\n1,10\n2,\xff\xfe\n3\n4,40\n")
    spec = route(
        "csv",
        f"replay:{rows}",
        [],
        f"sql:sqlite:///{tmp_path / 'rows.db'}?table=rows&key=id&create=true",
        errors={"dead-letter": "topic:csv.dlq"},
    )
    ctx = make_ctx("csv")
    worker = start(spec, ctx)
    try:
        dead = read_topic(ctx, "csv.dlq", 2)
        wait_for(lambda: ctx.progress.get("csv", "row") == 4)
    finally:
        worker.stop()
    reasons = sorted(from_record(r).get_attributes()["kawadlqmessage"] for r in dead)
    assert "not valid UTF-8" in reasons[0] and "1 fields, the header has 2" in reasons[1]
    with sqlite3.connect(tmp_path / "rows.db") as db:
        assert [r[0] for r in db.execute("select id from rows order by id")] == ["1", "4"]


def test_route_added_and_removed_while_another_runs(tmp_path: Path, config: object) -> None:
    from kawa.platform import Platform
    from kawa.routes.service import RouteService

    platform = Platform(config)  # type: ignore[arg-type]
    service = RouteService(platform, interval=0.1)
    registry = service.registry
    registry.apply(load_routes(f"id: steady\nfrom: timer:t?period=20ms\nto: file:{tmp_path / 'steady'}\n"))
    service.start()
    try:
        steady = wait_for(lambda: service.runner.workers.get("steady"))
        wait_for(lambda: steady.stats.delivered >= 5)
        registry.apply(load_routes(f"id: extra\nfrom: timer:e?period=20ms\nto: file:{tmp_path / 'extra'}\n"))
        wait_for(lambda: "extra" in service.runner.workers and service.runner.workers["extra"].stats.delivered >= 3)
        registry.apply(load_routes(f"id: extra\nfrom: timer:e?period=30ms\nto: file:{tmp_path / 'extra2'}\n"))
        wait_for(lambda: (tmp_path / "extra2").is_dir() and any((tmp_path / "extra2").iterdir()))
        registry.delete("extra")
        wait_for(lambda: "extra" not in service.runner.workers)
        before = steady.stats.delivered
        wait_for(lambda: steady.stats.delivered >= before + 5)
        # The steady route was never restarted: same worker, one session, counting on.
        assert service.runner.workers["steady"] is steady and steady.stats.restarts == 0
        assert platform.route_runner.specs()[0].id == "steady"
        counts = sorted(json.loads(p.read_text())["count"] for p in (tmp_path / "steady").glob("*.json"))
        assert counts == list(range(1, len(counts) + 1))  # no gap while the other route came and went
    finally:
        service.stop()
        platform.stop()


def test_killed_worker_resumes_without_loss_or_duplicates(tmp_path: Path, make_ctx: Ctx) -> None:
    ctx = make_ctx("killed")
    total = 3000
    _produce(ctx, "kill-in", [{"n": n} for n in range(total)], partitions=2)
    database = tmp_path / "sink.db"
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(
        "routes:\n  - id: killed\n    from: topic:kill-in\n    batch: 50\n"
        "    steps:\n      - map: {set: {square: 'n * n'}}\n"
        f"    to: 'sql:sqlite:///{database}?table=out&key=n&create=true'\n"
        f"  - id: killed-log\n    from: topic:kill-in?group=route-killed-log\n    batch: 50\n"
        "    to: topic:kill-out\n"
    )
    env = {**os.environ, "KAWA_HOME": str(ctx.config.home), "KAWA_STORE": str(tmp_path / "buckets")}

    def spawn(route_id: str, command: tuple[str, ...] = ("routes", "run")) -> subprocess.Popen[bytes]:
        # `kawa routes run ID` and `kawa worker --route ID` are the two ways to run a route alone.
        args = [*command, route_id, "--file" if command[0] == "routes" else "--route-file", str(routes_file)]
        return subprocess.Popen(
            [sys.executable, "-m", "kawa.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def rows() -> int:
        try:
            with sqlite3.connect(database) as db:
                return int(db.execute("select count(*) from out").fetchone()[0])
        except sqlite3.Error:
            return 0

    first, first_log = spawn("killed"), spawn("killed-log")
    try:
        wait_for(lambda: rows() >= 300, timeout=60)
        first.send_signal(signal.SIGKILL)
        first_log.send_signal(signal.SIGKILL)
        first.wait(10)
        first_log.wait(10)
        assert rows() < total, "the worker finished before it was killed; raise the record count"
        second, second_log = spawn("killed", ("worker", "--route")), spawn("killed-log", ("worker", "--route"))
        try:
            wait_for(lambda: rows() == total, timeout=120)
            records = read_topic(ctx, "kill-out", total, timeout=60)
        finally:
            for proc in (second, second_log):
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
    finally:
        for proc in (first, first_log):
            if proc.poll() is None:
                proc.kill()
    with sqlite3.connect(database) as db:
        assert db.execute("select count(distinct n), count(*), sum(square) from out").fetchone() == (
            total,
            total,
            sum(n * n for n in range(total)),
        )
    # The topic sink is at-least-once: no loss, and a redelivered message keeps its CloudEvent identity, so
    # deduplicating by source + id leaves exactly one copy per input.
    ids = [from_record(r).get_id() for r in records]
    assert set(ids) == {f"kill-in-{i}" for i in range(total)}


def test_apply_list_delete_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kawa.cli import _register
    from kawa.cli.app import app

    _register()
    good = tmp_path / "routes.yaml"
    good.write_text("routes:\n  - id: one\n    from: timer:x\n    to: topic:y\n")
    runner = CliRunner()
    result = runner.invoke(app, ["--home", str(tmp_path / "h"), "routes", "apply", str(good)])
    assert result.exit_code == 0, result.output
    assert "route one created" in result.output
    result = runner.invoke(app, ["--home", str(tmp_path / "h"), "routes", "list", "--json"])
    assert json.loads(result.output)[0]["id"] == "one"
    assert RouteRegistry.for_home(tmp_path / "h").get("one").from_.uri == "timer:x"
    result = runner.invoke(app, ["--home", str(tmp_path / "h"), "routes", "delete", "one"])
    assert result.exit_code == 0 and RouteRegistry.for_home(tmp_path / "h").list() == []
