"""Each endpoint component against the real thing: a directory, the embedded log, the local object store, a
real HTTP server and client, SQLite and PostgreSQL, a Parquet file, a timer."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from kawa.events import from_record
from kawa.routes.components.base import RouteContext
from kawa.routes.spec import route
from tests.routes.conftest import read_topic, start, wait_for

Ctx = Callable[[str], RouteContext]


def test_file_to_file_moves_and_remembers(tmp_path: Path, make_ctx: Ctx) -> None:
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / "a.json").write_text('{"n": 1}')
    (inbox / "b.json").write_text('{"n": 2}')
    spec = route(
        "files",
        {"uri": f"file:{inbox}", "settle": "0s", "interval": "50ms", "pattern": "*.json"},
        [{"map": {"set": {"double": "n * 2"}}}],
        f"file:{outbox}",
    )
    worker = start(spec, make_ctx("files"))
    try:
        wait_for(lambda: len(list(outbox.glob("*.json"))) == 2)
        assert json.loads((outbox / "b.json").read_text()) == {"n": 2, "double": 4}
        (inbox / "c.json").write_text('{"n": 3}')  # a file dropped while the route runs
        wait_for(lambda: (outbox / "c.json").exists())
    finally:
        worker.stop()
    # A second run reads nothing again: the ledger in the progress store remembers finished files.
    (outbox / "a.json").unlink()
    worker = start(spec, make_ctx("files"))
    try:
        wait_for(lambda: worker.stats.state == "running")
        threading.Event().wait(0.5)
        assert not (outbox / "a.json").exists()
        assert worker.stats.received == 0
    finally:
        worker.stop()


def test_topic_to_topic_keeps_identity_and_commits(make_ctx: Ctx) -> None:
    from kawa.events import new_event, to_kafka
    from kawa.log.base import TopicSpec

    ctx = make_ctx("topics")
    ctx.log.create_topic(TopicSpec("orders", partitions=3), exist_ok=True)
    producer = ctx.log.producer()
    for i in range(30):
        _key, value, headers = to_kafka(new_event("shop.order", "/shop", {"n": i}, id=f"order-{i}"))
        producer.produce("orders", value, key=str(i).encode(), headers=headers)
    producer.flush()
    spec = route("topics", "topic:orders", [{"filter": "n % 2 == 0"}], "topic:even-orders")
    worker = start(spec, ctx)
    try:
        records = read_topic(ctx, "even-orders", 15)
    finally:
        worker.stop()
    events = [from_record(r) for r in records]
    assert sorted(e.get_id() for e in events) == sorted(f"order-{i}" for i in range(0, 30, 2))
    assert {e.get_source() for e in events} == {"/kawa/routes/topics"}
    assert all(e.get_type() == "shop.order" for e in events)
    lag = ctx.log.lag("route-topics", ["orders"])
    assert sum(p.lag for p in lag) == 0


def test_bucket_source_and_sink_on_the_local_store(make_ctx: Ctx) -> None:
    ctx = make_ctx("buckets")
    store = ctx.store
    store.create_bucket("raw", exist_ok=True)
    spec = route("buckets", "bucket:raw?suffix=.txt", [{"map": "body.upper()"}], "bucket:cooked?prefix=up/")
    worker = start(spec, ctx)
    try:
        wait_for(lambda: worker.stats.state == "running")
        store.put("raw", "docs/hello.txt", b"hello", content_type="text/plain")
        store.put("raw", "docs/skip.bin", b"ignored")
        wait_for(lambda: store.bucket_exists("cooked") and store.list_objects("cooked").objects)
    finally:
        worker.stop()
    objects = store.list_objects("cooked").objects
    assert [o.key for o in objects] == ["up/docs/hello.txt"]
    with store.get("cooked", "up/docs/hello.txt") as reader:
        assert reader.read() == b"HELLO"


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first: list[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.fail_first:
            self.fail_first.pop()
            self.send_response(503)
        else:
            type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_source_to_http_sink_with_retry(make_ctx: Ctx) -> None:
    _Collector.received = []
    _Collector.fail_first = [1]  # the sink's first POST gets a 503 and is retried
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{server.server_address[1]}/in"
    spec = route(
        "hooks",
        "http:/hooks/orders?port=0",
        [{"map": {"set": {"seen": "True"}}}],
        target,
        errors={"delay": 0.05},
    )
    ctx = make_ctx("hooks")
    worker = start(spec, ctx)
    try:
        wait_for(lambda: worker.stats.state == "running")
        from kawa.routes.components.http import _Servers

        port = next(p for (_, p), (srv, _) in _Servers.servers.items() if "/hooks/orders" in srv.paths and p)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/hooks/orders",
            json={"amount": 5},
            headers={"ce-id": "evt-1", "ce-source": "/shop", "ce-type": "shop.order", "ce-specversion": "1.0"},
        )
        assert reply.status_code == 202  # answered only after the sink stored it
        assert httpx.post(f"http://127.0.0.1:{port}/nowhere", json={}).status_code == 404
        assert (
            httpx.post(
                f"http://127.0.0.1:{port}/hooks/orders",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ).status_code
            == 400
        )
    finally:
        worker.stop()
        server.shutdown()
    headers, body = _Collector.received[0]
    assert json.loads(body) == {"amount": 5, "seen": True}
    assert headers["ce-id"] == "evt-1" and headers["ce-type"] == "shop.order"
    assert worker.stats.redeliveries >= 1


def _sql_roundtrip(make_ctx: Ctx, url: str, route_id: str) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, func, insert, select

    engine = create_engine(url)
    meta = MetaData()
    source = Table(f"{route_id}_orders", meta, Column("id", Integer, primary_key=True), Column("email", Text))
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(source), [{"id": i, "email": f"user{i}@example.org"} for i in range(1, 21)])
    spec = route(
        route_id,
        f"sql:{url}?table={route_id}_orders&column=id&interval=100ms",
        [{"pii-mask": {"fields": {"email": "mask"}}}],
        f"sql:{url}?table={route_id}_masked&key=id&create=true",
    )
    ctx = make_ctx(route_id)
    worker = start(spec, ctx)

    def count() -> int:
        try:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count()).select_from(Table(f"{route_id}_masked", MetaData(), autoload_with=engine))
                    ).scalar_one()
                )
        except Exception:
            return 0

    try:
        wait_for(lambda: count() == 20)
        with engine.begin() as conn:  # rows added later are picked up from the last polled id
            conn.execute(insert(source), [{"id": 21, "email": "late@example.org"}])
        wait_for(lambda: count() == 21)
    finally:
        worker.stop()
    assert ctx.progress.get(route_id, "last") == 21
    masked = Table(f"{route_id}_masked", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        emails = [r.email for r in conn.execute(select(masked))]
    assert emails and all(e == "****" for e in emails)
    engine.dispose()


def test_sql_sqlite(tmp_path: Path, make_ctx: Ctx) -> None:
    _sql_roundtrip(make_ctx, f"sqlite:///{tmp_path / 'shop.db'}", "lite")


def test_sql_postgresql(postgres_url: str, make_ctx: Ctx) -> None:
    _sql_roundtrip(make_ctx, postgres_url, "pg")


def test_replay_parquet_source_resumes(tmp_path: Path, make_ctx: Ctx) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "tx.parquet"
    pq.write_table(pa.table({"id": list(range(50)), "amount": [float(i) for i in range(50)]}), path, row_group_size=7)
    spec = route("replay", f"replay:{path}", [], f"sql:sqlite:///{tmp_path / 'out.db'}?table=tx&key=id&create=true")
    ctx = make_ctx("replay")
    worker = start(spec, ctx)
    try:
        wait_for(lambda: ctx.progress.get("replay", "row") == 50)
    finally:
        worker.stop()
    with sqlite3.connect(tmp_path / "out.db") as db:
        assert db.execute("select count(*), sum(amount) from tx").fetchone() == (50, float(sum(range(50))))


def test_timer_source(tmp_path: Path, make_ctx: Ctx) -> None:
    spec = route("tick", "timer:beat?period=50ms&repeat=3", [], f"file:{tmp_path / 'ticks'}")
    worker = start(spec, make_ctx("tick"))
    try:
        wait_for(lambda: len(list((tmp_path / "ticks").glob("*.json"))) == 3)
    finally:
        worker.stop()
    counts = sorted(json.loads(p.read_text())["count"] for p in (tmp_path / "ticks").glob("*.json"))
    assert counts == [1, 2, 3]


@pytest.mark.parametrize("name", ["json", "csv", "parquet", "jsonl"])
def test_convert_round_trips(name: str) -> None:
    from kawa.routes.message import Message
    from kawa.routes.processors.convert import Convert

    rows = [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    message = Message(body=rows, id="m", source="s")
    encoded = Convert({"to": name}).process(message)[0]
    back = Convert({"to": "records", "from": name}).process(encoded)[0]
    assert back.body == rows
