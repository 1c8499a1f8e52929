"""The embedded host on the in-memory log: replies, retries, dead letters, poison events, ordering, scaling,
dedupe, drain, async handlers, metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from kawa.config import load_config
from kawa.errors import InvalidFunction
from kawa.events import CloudEvent, event_key, from_record, new_event
from kawa.functions import App, Context, FunctionHost, PermanentError
from kawa.functions.context import derived_id
from kawa.functions.dedupe import MemoryDedupeStore
from kawa.log.base import EventLog, TopicSpec
from tests.functions.conftest import FAST, committed, events, produce, read_all, wait_for

pytestmark = pytest.mark.timeout(60)


def test_handler_runs_for_every_event_and_replies_with_deterministic_ids(memlog: EventLog) -> None:
    app = App("t")
    seen: list[str] = []

    @app.function(topic="in", reply_topic="out")
    def double(event: CloudEvent, ctx: Context) -> CloudEvent:
        seen.append(event.get_id())
        data = event.get_data()
        assert isinstance(data, dict)
        return new_event("doubled", "/t", {"n": data["n"] * 2})

    memlog.create_topic(TopicSpec("in", partitions=3))
    produce(memlog, "in", events(30), key=None)
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.double"].succeeded == 30)
        wait_for(lambda: sum(v or 0 for v in committed(memlog, "kawa-fn-t-double", "in").values()) == 30)
    assert sorted(seen) == sorted(f"e{i}" for i in range(30))
    replies = [from_record(r) for r in read_all(memlog, "out", 30)]
    assert len(replies) == 30
    spec = app.get("double")
    expected = {derived_id(spec, e, "reply:0") for e in events(30)}
    assert {r.get_id() for r in replies} == expected  # a re-run would emit the same ids
    assert sorted(r.get_data()["n"] for r in replies) == [2 * i for i in range(30)]  # type: ignore[index]


def test_retries_then_dead_letter_with_the_reason(memlog: EventLog) -> None:
    app = App("t")
    attempts: list[int] = []

    @app.function(topic="in", retries=2, backoff_s=0.01, max_backoff_s=0.05)
    def broken(event: CloudEvent, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ValueError(f"cannot read {event.get_subject()}")

    memlog.create_topic(TopicSpec("in"))
    original = new_event("x.y", "/src", {"a": 1}, subject="img1.dcm", id="poison-1")
    produce(memlog, "in", [original], key=b"k1")
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.broken"].dead_lettered == 1)
        stats = host.metrics()["t.broken"]
        wait_for(lambda: committed(memlog, "kawa-fn-t-broken", "in") == {0: 1})
    assert attempts == [1, 2, 3]
    assert (stats.retries, stats.failed_attempts, stats.succeeded) == (2, 3, 0)
    (dead,) = read_all(memlog, "in.dlq", 1)
    (source,) = read_all(memlog, "in", 1)
    assert dead.value == source.value and dead.key == b"k1"
    assert set(source.headers) <= set(dead.headers), "the original headers travel unchanged"
    assert dead.header("kawa-dlq-reason") == b"handler-error"
    assert dead.header("kawa-dlq-message") == b"cannot read img1.dcm"
    assert dead.header("kawa-dlq-attempts") == b"3"
    assert dead.header("kawa-dlq-kind") == b"function" and dead.header("kawa-dlq-component") == b"t.broken"
    assert dead.header("kawa-dlq-source-topic") == b"in"
    assert (dead.header("kawa-dlq-source-partition"), dead.header("kawa-dlq-source-offset")) == (b"0", b"0")
    first, last = dead.header("kawa-dlq-first-failure"), dead.header("kawa-dlq-last-failure")
    assert first is not None and last is not None and first <= last
    event = from_record(dead)  # still the original CloudEvent, with the reason as extensions
    assert (event.get_id(), event.get_source(), event.get_data()) == ("poison-1", "/src", {"a": 1})
    assert event.get_extension("kawadlqreason") == "handler-error"
    assert event.get_extension("kawadlqcomponent") == "t.broken"


def test_a_poison_event_does_not_block_later_events_of_its_partition(memlog: EventLog) -> None:
    app = App("t")
    done_at: dict[str, float] = {}

    @app.function(topic="in", concurrency=2, max_scale=1, retries=3, backoff_s=0.25, max_backoff_s=0.25)
    def handle(event: CloudEvent, ctx: Context) -> None:
        if event.get_id() == "e0":
            raise RuntimeError("poison")
        done_at[event.get_id()] = time.monotonic()

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(20))
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: len(done_at) == 19, timeout=5)
        # Everything after the poison event is done while it still waits for its retries...
        assert host.metrics()["t.handle"].dead_lettered == 0
        # ...and the commit cannot pass it yet.
        assert committed(memlog, "kawa-fn-t-handle", "in")[0] in (None, 0)
        wait_for(lambda: host.metrics()["t.handle"].dead_lettered == 1, timeout=5)
        wait_for(lambda: committed(memlog, "kawa-fn-t-handle", "in") == {0: 20})
    assert len(read_all(memlog, "in.dlq", 1)) == 1


def test_permanent_error_is_dead_lettered_without_retries(memlog: EventLog) -> None:
    app = App("t")
    calls: list[int] = []

    @app.function(topic="in", retries=5)
    def strict(event: CloudEvent, ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise PermanentError("not an image")

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(1))
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.strict"].dead_lettered == 1)
    assert calls == [1]
    (dead,) = read_all(memlog, "in.dlq", 1)
    assert dead.header("kawa-dlq-reason") == b"invalid-input" and dead.header("kawa-dlq-attempts") == b"1"


def test_records_that_are_not_cloudevents_are_dead_lettered_and_passed(memlog: EventLog) -> None:
    app = App("t")
    seen: list[str] = []

    @app.function(topic="in")
    def handle(event: CloudEvent, ctx: Context) -> None:
        seen.append(event.get_id())

    memlog.create_topic(TopicSpec("in"))
    memlog.producer().send("in", b"plain bytes")
    produce(memlog, "in", events(2))
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.handle"].succeeded == 2 and host.metrics()["t.handle"].dead_lettered == 1)
        wait_for(lambda: committed(memlog, "kawa-fn-t-handle", "in") == {0: 3})
    (dead,) = read_all(memlog, "in.dlq", 1)
    assert dead.value == b"plain bytes" and dead.header("kawa-dlq-reason") == b"undecodable"
    assert dead.header("kawa-dlq-attempts") == b"1"


def test_filtered_events_are_skipped_and_committed(memlog: EventLog) -> None:
    app = App("t")
    seen: list[str | None] = []

    @app.function(topic="in", filter={"type": {"prefix": "com.amazonaws.s3.ObjectCreated"}})
    def created(event: CloudEvent, ctx: Context) -> None:
        seen.append(event.get_subject())

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", [
        new_event("com.amazonaws.s3.ObjectCreated:Put", "/b", subject="a"),
        new_event("com.amazonaws.s3.ObjectRemoved:Delete", "/b", subject="b"),
        new_event("com.amazonaws.s3.ObjectCreated:Copy", "/b", subject="c"),
    ])
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: committed(memlog, "kawa-fn-t-created", "in") == {0: 3})
        assert host.metrics()["t.created"].filtered == 1
    assert sorted(seen) == ["a", "c"]  # type: ignore[type-var]


def test_ordered_by_key_runs_each_key_in_offset_order_and_keys_in_parallel(memlog: EventLog) -> None:
    app = App("t")
    order: dict[str, list[int]] = {}
    running: set[str] = set()
    most = [0]
    lock = threading.Lock()

    @app.function(topic="in", ordered_by_key=True, concurrency=4, min_scale=1, max_scale=1)
    def handle(event: CloudEvent, ctx: Context) -> None:
        data = event.get_data()
        assert isinstance(data, dict)
        key = data["key"]
        with lock:
            assert key not in running, "two events of one key ran at once"
            running.add(key)
            most[0] = max(most[0], len(running))
        time.sleep(0.01 if data["n"] % 3 else 0.03)
        with lock:
            running.discard(key)
            order.setdefault(key, []).append(data["n"])

    memlog.create_topic(TopicSpec("in"))
    producer = memlog.producer()
    from kawa.events import to_kafka

    for n in range(40):
        key = "abcd"[n % 4]
        _k, value, headers = to_kafka(new_event("t", "/t", {"n": n, "key": key}, id=f"o{n}"))
        producer.produce("in", value, key=key.encode(), headers=headers)
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.handle"].succeeded == 40)
    for key, ns in order.items():
        assert ns == sorted(ns), f"key {key} ran out of order: {ns}"
    assert most[0] >= 2, "different keys should run concurrently"


def test_scale_from_zero_on_the_first_event_and_back_to_zero_after_the_grace(memlog: EventLog) -> None:
    app = App("t")
    done = threading.Event()

    @app.function(topic="in", min_scale=0, stable_window_s=0.5, scale_to_zero_grace_s=0.3)
    def handle(event: CloudEvent, ctx: Context) -> None:
        done.set()

    memlog.create_topic(TopicSpec("in"))
    with FunctionHost(app, log=memlog, options=FAST) as host:
        time.sleep(0.2)
        assert host.metrics()["t.handle"].replicas == 0
        start = time.monotonic()
        produce(memlog, "in", events(1))
        assert done.wait(2.0)
        cold_start = time.monotonic() - start
        assert cold_start < 0.5, f"cold start took {cold_start:.3f} s"
        wait_for(lambda: host.metrics()["t.handle"].replicas == 1, timeout=1)
        wait_for(lambda: host.metrics()["t.handle"].replicas == 0, timeout=3)
        assert host.metrics()["t.handle"].scale_events >= 2


def test_scales_out_under_load_up_to_max_scale(memlog: EventLog) -> None:
    app = App("t")
    running = [0, 0]
    lock = threading.Lock()

    @app.function(topic="in", concurrency=1, max_scale=4, stable_window_s=1.0)
    def slow(event: CloudEvent, ctx: Context) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(40))
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.slow"].succeeded == 40)
        stats = host.metrics()["t.slow"]
    assert running[1] == 4, "one invocation per replica, four replicas"
    assert stats.desired_replicas <= 4


def test_redelivered_events_are_skipped_by_dedupe(memlog: EventLog) -> None:
    app = App("t")
    calls: list[str] = []

    @app.function(topic="in")
    def handle(event: CloudEvent, ctx: Context) -> None:
        calls.append(event.get_id())

    memlog.create_topic(TopicSpec("in"))
    dedupe = MemoryDedupeStore()
    produce(memlog, "in", events(5))
    with FunctionHost(app, log=memlog, options=FAST, dedupe=dedupe) as host:
        wait_for(lambda: host.metrics()["t.handle"].succeeded == 5)
        produce(memlog, "in", events(5))  # the same source+id again (a producer retry, a re-published notification)
        wait_for(lambda: host.metrics()["t.handle"].duplicates == 5)
    assert sorted(calls) == [f"e{i}" for i in range(5)]
    assert dedupe.status("kawa-fn-t-handle", event_key(events(1)[0])) == "done"


def test_stop_drains_running_invocations_and_commits_them(memlog: EventLog) -> None:
    app = App("t")
    started = threading.Semaphore(0)
    finished: list[str] = []

    @app.function(topic="in", concurrency=3, min_scale=1, max_scale=1)
    def slow(event: CloudEvent, ctx: Context) -> None:
        started.release()
        time.sleep(0.3)
        finished.append(event.get_id())

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(10))
    host = FunctionHost(app, log=memlog, options=FAST)
    host.start()
    for _ in range(3):
        assert started.acquire(timeout=5)
    host.stop()
    assert sorted(finished) == ["e0", "e1", "e2"], "the three running invocations finished; no new one started"
    assert committed(memlog, "kawa-fn-t-slow", "in") == {0: 3}


def test_async_handlers_run_concurrently_within_a_replica(memlog: EventLog) -> None:
    app = App("t")
    active = [0, 0]

    @app.function(topic="in", concurrency=8, min_scale=1, max_scale=1, reply_topic="out")
    async def fetch(event: CloudEvent, ctx: Context) -> CloudEvent:
        active[0] += 1
        active[1] = max(active)
        await asyncio.sleep(0.1)
        active[0] -= 1
        return ctx.new_event("fetched", {"id": event.get_id()})

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(16))
    with FunctionHost(app, log=memlog, options=FAST) as host:
        start = time.monotonic()
        wait_for(lambda: host.metrics()["t.fetch"].succeeded == 16)
        elapsed = time.monotonic() - start
    assert active[1] == 8
    assert elapsed < 1.2, f"16 x 0.1 s with 8 at a time should take ~0.2 s, took {elapsed:.2f} s"
    assert len(read_all(memlog, "out", 16)) == 16


def test_metrics_and_context(memlog: EventLog) -> None:
    app = App("t", config={"threshold": 0.5})
    got: dict[str, object] = {}

    @app.function(topic="in", config={"bucket": "out"})
    def handle(event: CloudEvent, ctx: Context) -> None:
        ctx.metrics.incr("images")
        ctx.emit("side", ctx.new_event("side.effect", {"of": event.get_id()}))
        got.update(config=ctx.config, function=ctx.function.name, key=ctx.idempotency_key("x"))

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(3))
    memlog.create_topic(TopicSpec("side"))
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.handle"].succeeded == 3)
        stats = host.metrics()["t.handle"]
    assert got["config"] == {"threshold": 0.5, "bucket": "out"} and got["function"] == "handle"
    assert stats.custom == {"images": 3.0}
    assert stats.latency_p50_ms is not None and stats.latency_p99_ms is not None and stats.rate_per_s > 0
    assert stats.to_dict()["received"] == 3
    assert len(read_all(memlog, "side", 3)) == 3


def test_invalid_functions_are_refused() -> None:
    app = App("t")
    with pytest.raises(InvalidFunction, match="needs a trigger"):
        app.function(name="x")(lambda e, c: None)
    with pytest.raises(InvalidFunction, match="concurrency"):
        app.function(name="y", topic="in", concurrency=0)(lambda e, c: None)
    with pytest.raises(InvalidFunction, match="topic name"):
        app.function(name="z", topic="bad topic")(lambda e, c: None)
    with pytest.raises(InvalidFunction, match="app name"):
        App("Not_Valid")
    with pytest.raises(InvalidFunction, match="already has"):
        app.function(name="dup", topic="in")(lambda e, c: None)
        app.function(name="dup", topic="in")(lambda e, c: None)


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    app = App("t")
    app.function(name="f", topic="in", backoff_s=0.1, max_backoff_s=1.0)(lambda e, c: None)
    spec = app.get("f")
    assert [spec.backoff(n) for n in (1, 2, 3, 4, 5, 9)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    low, high = spec.backoff(2, random=0.0), spec.backoff(2, random=0.999)
    assert low == pytest.approx(0.2 * (1 - spec.jitter)) and high == pytest.approx(0.2 * (1 + spec.jitter), rel=1e-2)
    assert spec.backoff(30, random=0.999) <= 1.0
    assert replace(spec, retries=0).retries == 0


def test_ctx_model_delegates_to_one_lazily_created_model_manager(
    memlog: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kawa.ml.predictors as predictors

    made: list[object] = []

    class FakeManager:
        def __init__(self, config: object, log: object = None) -> None:
            made.append(config)

        def get(self, ref: str) -> object:
            return SimpleNamespace(current=lambda: f"predictor for {ref}")  # a handle: the version serving now

        def flush(self, timeout: float | None = None) -> None:
            pass

        def close(self) -> None:
            made.append("closed")

    monkeypatch.setattr(predictors, "ModelManager", FakeManager)
    app = App("t")
    got: list[object] = []

    @app.function(topic="in")
    def score(event: CloudEvent, ctx: Context) -> None:
        got.append(ctx.model("pneumonia@champion"))

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(3))
    with FunctionHost(app, log=memlog, config=load_config(), dedupe=MemoryDedupeStore(), options=FAST) as host:
        wait_for(lambda: host.metrics()["t.score"].succeeded == 3)
    assert got == ["predictor for pneumonia@champion"] * 3
    assert len(made) == 2 and made[-1] == "closed", "one manager, created on first use, closed with the host"


def test_ctx_model_keeps_one_version_per_event_while_the_alias_moves(
    memlog: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kawa.ml import predictors

    class Handle:
        """Like ModelHandle: ``current()`` is the version serving now; it moves on every call here."""

        def __init__(self) -> None:
            self.version = 0

        def current(self) -> str:
            self.version += 1
            return f"v{self.version}"

    handle = Handle()

    class FakeManager:
        def __init__(self, config: object, log: object = None) -> None:
            pass

        def get(self, ref: str) -> Handle:
            return handle

        def flush(self, timeout: float | None = None) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(predictors, "ModelManager", FakeManager)
    app = App("pin")
    seen: list[tuple[object, object]] = []

    @app.function(topic="in")
    def score(event: CloudEvent, ctx: Context) -> None:
        seen.append((ctx.model("m@champion"), ctx.model("m@champion")))

    memlog.create_topic(TopicSpec("in"))
    produce(memlog, "in", events(3))
    with FunctionHost(app, log=memlog, config=load_config(), dedupe=MemoryDedupeStore(), options=FAST) as host:
        wait_for(lambda: host.metrics()["pin.score"].succeeded == 3)
    assert all(first == second for first, second in seen), seen
    assert len({first for first, _ in seen}) == 3, "each event resolves the alias afresh"
