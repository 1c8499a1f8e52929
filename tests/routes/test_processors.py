"""The integration patterns one by one, and custom processors by name (registry and entry points)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.components.base import RouteContext
from kawa.routes.message import Message
from kawa.routes.processors import build_pipeline, known_processors, register_processor

Ctx = Callable[[str], RouteContext]


def _msg(body: Any, id: str = "m1") -> Message:
    return Message(body=body, id=id, source="test", tokens=(id,))


def test_map_filter_split_choice(tmp_path: Path, make_ctx: Ctx) -> None:
    ctx = make_ctx("p")
    pipeline = build_pipeline(
        [
            {"split": {"expr": "body['items']"}},
            {"filter": "qty > 0"},
            {"map": {"set": {"total": "qty * price"}}},
            {
                "choice": {
                    "when": [{"if": "total >= 100", "to": f"file:{tmp_path / 'big'}?name={{id}}.json"}],
                    "otherwise": [{"map": {"set": {"small": "True"}}}],
                }
            },
        ],
        ctx,
    )
    out = pipeline.run(_msg({"items": [{"qty": 2, "price": 60}, {"qty": 0, "price": 5}, {"qty": 1, "price": 5}]}))
    assert [m.body for m in out] == [{"qty": 1, "price": 5, "total": 5, "small": True}]
    assert out[0].id == "m1#2" and out[0].headers["split-size"] == 3
    assert json.loads((tmp_path / "big" / "m1#0.json").read_text())["total"] == 120
    pipeline.close()


def test_aggregate_by_count_and_window_holds_tokens(make_ctx: Ctx) -> None:
    pipeline = build_pipeline([{"aggregate": {"count": 3, "window": "50ms", "key": "kind"}}], make_ctx("a"))
    assert pipeline.run(_msg({"kind": "a", "n": 1}, "1")) == []
    assert pipeline.run(_msg({"kind": "b", "n": 2}, "2")) == []
    assert pipeline.held() == {"1", "2"}
    pipeline.run(_msg({"kind": "a", "n": 3}, "3"))
    (full,) = pipeline.run(_msg({"kind": "a", "n": 4}, "4"))
    assert [b["n"] for b in full.body] == [1, 3, 4] and full.tokens == ("1", "3", "4")
    again = build_pipeline([{"aggregate": {"count": 3, "key": "kind"}}], make_ctx("a2"))
    for i in ("1", "3"):
        again.run(_msg({"kind": "a"}, i))
    assert again.run(_msg({"kind": "a"}, "4"))[0].id == full.id  # a redelivered group keeps its id
    import time

    time.sleep(0.06)
    (late,) = pipeline.tick(time.monotonic())
    assert late.body == [{"kind": "b", "n": 2}] and pipeline.held() == set()


def test_enrich_from_file_sql_and_topic(tmp_path: Path, make_ctx: Ctx) -> None:
    from kawa.log.base import TopicSpec

    ctx = make_ctx("e")
    (tmp_path / "customers.csv").write_text("id,tier\n7,gold\n8,silver\n")
    step = build_pipeline(
        [
            {
                "enrich": {
                    "table": f"file:{tmp_path / 'customers.csv'}",
                    "key": "customer",
                    "into": "customer_row",
                    "missing": "drop",
                }
            }
        ],
        ctx,
    )
    assert step.run(_msg({"customer": 7}))[0].body["customer_row"] == {"id": "7", "tier": "gold"}
    assert step.run(_msg({"customer": 99})) == []
    db = tmp_path / "c.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table c (id integer primary key, region text)")
        conn.execute("insert into c values (7, 'north')")
    step = build_pipeline([{"enrich": {"table": f"sql:sqlite:///{db}?table=c", "key": "customer"}}], ctx)
    assert step.run(_msg({"customer": 7}))[0].body == {"id": 7, "region": "north", "customer": 7}
    ctx.log.create_topic(TopicSpec("customers"), exist_ok=True)
    producer = ctx.log.producer()
    producer.produce("customers", b'{"id": 7, "vip": true}', key=b"7")
    producer.flush()
    step = build_pipeline([{"enrich": {"table": "topic:customers", "key": "customer", "missing": "reject"}}], ctx)
    assert step.run(_msg({"customer": 7}))[0].body["vip"] is True
    producer.produce("customers", None, key=b"7")  # tombstone: deleted
    producer.flush()
    with pytest.raises(MessageRejected, match="no row with id=7"):
        step.run(_msg({"customer": 7}))
    step.close()


def test_validate_json_schema_and_pydantic(make_ctx: Ctx) -> None:
    schema = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number", "minimum": 0}}}
    step = build_pipeline([{"validate": {"schema": schema}}], make_ctx("v"))
    assert step.run(_msg(b'{"amount": 3}'))[0].body == {"amount": 3}
    with pytest.raises(MessageRejected, match="invalid at /amount: -1 is less than the minimum of 0"):
        step.run(_msg({"amount": -1}))
    model = build_pipeline(
        [{"validate": {"model": "tests.routes.test_processors:Order", "coerce": True}}], make_ctx("v2")
    )
    assert model.run(_msg({"amount": "4.5"}))[0].body == {"amount": 4.5}
    with pytest.raises(MessageRejected, match="amount"):
        model.run(_msg({"amount": "lots"}))


class Order(BaseModel):
    amount: float


class Upper:
    def __init__(self, options: Any, ctx: RouteContext) -> None:
        self.field = options["field"]

    def process(self, message: Message) -> list[Message]:
        return [message.derive({**message.body, self.field: message.body[self.field].upper()})]


def test_custom_processors_by_name_and_entry_point(make_ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import kawa.routes.processors as registry

    register_processor("upper", Upper)
    out = build_pipeline([{"upper": {"field": "name"}}], make_ctx("c")).run(_msg({"name": "ada"}))
    assert out[0].body == {"name": "ADA"}

    class FakeEntryPoint:
        name = "shout"

        def load(self) -> Any:
            return Upper

    monkeypatch.setattr(registry, "_entry_points", None)
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: [FakeEntryPoint()] if group == "kawa.processors" else []
    )
    assert "shout" in known_processors()
    out = build_pipeline([{"shout": {"field": "name"}}], make_ctx("c2")).run(_msg({"name": "bob"}))
    assert out[0].body == {"name": "BOB"}
    with pytest.raises(InvalidRoute, match=r"unknown processor 'whisper'; known processors: .*shout"):
        build_pipeline(["whisper"], make_ctx("c3"))


def test_convert_dicom_to_png(make_ctx: Ctx) -> None:
    import io

    from PIL import Image
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("RG1_UNCI.dcm") or "").read_bytes()
    (out,) = build_pipeline([{"convert": {"to": "png"}}], make_ctx("png")).run(_msg(data))
    image = Image.open(io.BytesIO(out.body))
    assert image.format == "PNG" and image.size == (1841, 1955) and out.headers["content-type"] == "image/png"
