"""The typed handler API in the function host: ``ObjectEvent`` handlers on a real bucket trigger, declared
outputs, no raw log handle, predictions linked to the event being handled, and no backend opened behind the
host's back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import kawa
from kawa.deadletter import read_reason
from kawa.errors import FunctionError
from kawa.events import CloudEvent
from kawa.functions import App, FunctionHost
from kawa.functions.context import Context, Runtime
from kawa.functions.types import EventRef, current_event, handling
from kawa.log.base import EventLog, TopicSpec
from kawa.store.base import ObjectStore
from kawa.testing import cloud_event, invoke, s3_created
from tests.functions.conftest import FAST, produce, read_all, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def memstore(memlog: EventLog) -> Iterator[ObjectStore]:
    from kawa.store import open_store

    store = open_store("memory:", log=memlog)
    yield store
    store.close()


def test_an_object_event_handler_reads_the_uploaded_object_in_the_host(memlog: EventLog, memstore: ObjectStore) -> None:
    app = App("objects")
    seen: list[tuple[kawa.ObjectEvent, bool]] = []

    @app.function(bucket="uploads", outputs=())
    def copy(obj: kawa.ObjectEvent, ctx: kawa.Context) -> None:
        seen.append((obj, hasattr(ctx, "log")))
        ctx.store.put("copies", obj.key, obj.read()[::-1])

    memstore.create_bucket("copies")
    with FunctionHost(app, log=memlog, store_factory=lambda: memstore, options=FAST) as host:
        memstore.put("uploads", "a/b.txt", b"hello")
        wait_for(lambda: host.metrics()["objects.copy"].succeeded == 1)
    with memstore.get("copies", "a/b.txt") as reader:
        assert reader.read() == b"olleh"
    ((obj, has_log),) = seen
    assert (obj.bucket, obj.key, obj.size, obj.event_name) == ("uploads", "a/b.txt", 5, "ObjectCreated:Put")
    assert obj.ref.source.endswith("uploads") and obj.ref.id
    assert not has_log, "a handler has no raw log handle: it emits through ctx.emit or its return value"


def test_emitting_to_an_undeclared_topic_is_dead_lettered_naming_the_outputs(memlog: EventLog) -> None:
    app = App("outs")

    @app.function(topic="jobs", outputs=("jobs.done",), retries=0)
    def work(event: CloudEvent, ctx: kawa.Context) -> None:
        ctx.emit("jobs.audit", ctx.new_event("outs.audit", {}))

    memlog.create_topic(TopicSpec("jobs"))
    produce(memlog, "jobs", [cloud_event("outs.job", {"n": 1}, id="j1")])
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["outs.work"].dead_lettered == 1)
    (dead,) = read_all(memlog, "jobs.dlq", 1)
    why = read_reason(dead.headers)
    assert why is not None and "'jobs.audit'" in why.message and "'jobs.done'" in why.message


def test_declared_outputs_include_the_apps_and_the_reply_topic() -> None:
    app = App("decl", outputs=("shared",))

    @app.function(topic="in", reply_topic="replies", outputs=("own",))
    def one(event: CloudEvent, ctx: kawa.Context) -> None: ...

    @app.function(topic="in2")
    def two(event: CloudEvent, ctx: kawa.Context) -> None: ...

    assert app.get("one").outputs == ("shared", "own", "replies")
    assert app.get("two").outputs == ("shared",)
    assert App("free").outputs is None
    with pytest.raises(kawa.KawaError, match="outputs"):
        App("bad", outputs=("no spaces allowed",))


def test_a_prediction_is_linked_to_the_event_being_handled() -> None:
    """The registry's predictor (``kawa.ml.predictors.Predictor``) records the current event's id itself."""
    from kawa.ml.loaders import LoadedModel, TensorSpec
    from kawa.ml.predictors import Predictor

    recorded: list[str | None] = []

    class Recorder:
        def record(self, *args: Any, event: Any = None, event_id: str | None = None, **kwargs: Any) -> None:
            recorded.append(event_id if event_id is not None else (event.id if event is not None else None))

    spec = TensorSpec("x", None, None)
    loaded = LoadedModel("fake", lambda x: np.asarray(x).sum(axis=1), spec, spec)
    predictor = Predictor("risk", 3, loaded, Recorder())  # type: ignore[arg-type]
    assert predictor.ref == "risk/3" and isinstance(predictor, kawa.Predictor)

    app = App("linked")

    @app.function(topic="in")
    def score(event: CloudEvent, ctx: kawa.Context) -> None:
        ctx.model("risk@champion").predict([[1.0, 2.0]])

    event = cloud_event("linked.in", {}, id="evt-42")
    assert invoke(score, event, models={"risk@champion": predictor}).outcome == "ok"
    predictor.predict([[1.0]])  # outside a handler: linked to nothing
    predictor.predict([[1.0]], event_id="given")  # an explicit id still wins
    assert recorded == ["evt-42", None, "given"]


def test_the_current_event_is_seen_by_async_handlers_in_the_host(memlog: EventLog) -> None:
    app = App("aio")
    seen: list[EventRef | None] = []

    @app.function(topic="ticks")
    async def tick(event: CloudEvent, ctx: kawa.Context) -> None:
        await asyncio.sleep(0)
        seen.append(current_event())

    memlog.create_topic(TopicSpec("ticks"))
    produce(memlog, "ticks", [cloud_event("aio.tick", {}, id=f"t{i}", source="/clock") for i in range(3)])
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["aio.tick"].succeeded == 3)
    assert sorted(seen, key=lambda r: r.id if r else "") == [EventRef("/clock", f"t{i}") for i in range(3)]
    assert current_event() is None


def test_handling_nests_and_restores() -> None:
    outer, inner = EventRef("/a", "1"), EventRef("/b", "2")
    with handling(outer):
        with handling(inner):
            assert current_event() == inner
        assert current_event() == outer
    assert current_event() is None
    assert outer.key() == "/a\x1f1"


def test_a_runtime_opens_no_store_or_registry_from_configuration() -> None:
    app = App("bare")

    @app.function(topic="in")
    def noop(event: CloudEvent, ctx: kawa.Context) -> None: ...

    runtime = Runtime(app.get("noop"))
    ctx = Context(runtime, cloud_event("x", {}))
    with pytest.raises(FunctionError, match="no object store"):
        ctx.store  # noqa: B018
    with pytest.raises(FunctionError, match="no model registry"):
        ctx.model("m@champion")
    with pytest.raises(FunctionError, match="no event log"):
        ctx.emit("out", cloud_event("y", {}))


def test_a_host_without_a_store_says_so_for_a_bucket_trigger(memlog: EventLog) -> None:
    app = App("nostore")

    @app.function(bucket="uploads")
    def handle(obj: kawa.ObjectEvent, ctx: kawa.Context) -> None: ...

    with pytest.raises(FunctionError, match="store_factory"):
        FunctionHost(app, log=memlog, options=FAST).start()


def test_a_runtime_takes_its_store_from_the_backends_it_is_given(memlog: EventLog, memstore: ObjectStore) -> None:
    from kawa.backends import given_backends
    from kawa.config import load_config

    app = App("given")

    @app.function(bucket="uploads")
    def size(obj: kawa.ObjectEvent, ctx: kawa.Context) -> CloudEvent:
        return ctx.new_event("given.size", {"size": len(obj.read())})

    backends = given_backends(load_config(), log=memlog, store=memstore)
    runtime = Runtime(app.get("size"), backends=backends)
    assert runtime.store is memstore and runtime.log is memlog
    out = invoke(size, s3_created("uploads", "k", body=b"1234"), store=runtime.store)
    assert out.outcome == "ok" and out.replies[0].get_data() == {"size": 4}
