"""Batched handlers (``@app.function(batch=N)``) on the embedded host: many events per call, and still each
event replied, committed, deduplicated and dead-lettered on its own; per-key order; a failing batch split."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from kawa.errors import InvalidFunction
from kawa.events import CloudEvent, from_record, new_event
from kawa.functions import App, FunctionHost, PermanentError
from kawa.functions.batch import BatchContext
from kawa.functions.context import derived_id
from kawa.functions.dedupe import MemoryDedupeStore
from kawa.log.base import EventLog, TopicSpec
from kawa.testing import invoke
from tests.functions.conftest import FAST, committed, events, produce, read_all, wait_for

pytestmark = pytest.mark.timeout(60)


def _n(event: CloudEvent) -> int:
    data = event.get_data()
    assert isinstance(data, dict)
    return int(data["n"])


def test_a_batched_handler_takes_many_events_per_call_and_replies_and_commits_each(memlog: EventLog) -> None:
    app = App("t")
    sizes: list[int] = []
    seen: list[str] = []
    gate = threading.Event()

    @app.function(topic="in", reply_topic="out", batch=64, concurrency=1, max_scale=1)
    def double(batch: list[CloudEvent], ctx: BatchContext) -> list[CloudEvent]:
        gate.wait(10)  # the first call holds the replica while the rest of the events queue up
        sizes.append(len(batch))
        seen.extend(e.get_id() for e in batch)
        return [ctx[i].new_event("doubled", {"n": _n(e) * 2}) for i, e in enumerate(batch)]

    memlog.create_topic(TopicSpec("in", partitions=1))
    produce(memlog, "in", events(200), key=None)
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.double"].queued > 0 or host.metrics()["t.double"].in_flight > 1)
        gate.set()
        wait_for(lambda: host.metrics()["t.double"].succeeded == 200)
        wait_for(lambda: committed(memlog, "kawa-fn-t-double", "in") == {0: 200})
    assert sorted(seen) == sorted(f"e{i}" for i in range(200))  # each event once
    assert max(sizes) > 1 and max(sizes) <= 64 and len(sizes) < 200
    replies = [from_record(r) for r in read_all(memlog, "out", 200)]
    spec = app.get("double")
    # one reply per event, with the id a one-event handler would give it: a re-run sends the same ids
    assert {r.get_id() for r in replies} == {derived_id(spec, e, "reply:0") for e in events(200)}
    assert sorted(_n(r) for r in replies) == [2 * i for i in range(200)]


def test_with_ordered_by_key_a_batch_holds_one_event_per_key_and_each_key_runs_in_order(memlog: EventLog) -> None:
    app = App("t")
    calls: list[list[tuple[str, int]]] = []

    @app.function(topic="in", batch=100, ordered_by_key=True, concurrency=2, max_scale=2)
    def chart(batch: list[CloudEvent], ctx: BatchContext) -> None:
        calls.append([(str(e.get_subject()), _n(e)) for e in batch])

    memlog.create_topic(TopicSpec("in", partitions=1))
    producer = memlog.producer()
    from kawa.events import to_kafka

    for i in range(60):
        key = f"k{i % 5}"
        _k, value, headers = to_kafka(new_event("x", "/t", {"n": i}, id=f"e{i}", subject=key))
        producer.produce("in", value, key=key.encode(), headers=headers)
    producer.flush()
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.chart"].succeeded == 60)
    for call in calls:
        keys = [k for k, _ in call]
        assert len(keys) == len(set(keys)), "two events of one key in one batch"
    by_key: dict[str, list[int]] = {}
    for call in calls:
        for k, n in call:
            by_key.setdefault(k, []).append(n)
    assert by_key == {f"k{j}": list(range(j, 60, 5)) for j in range(5)}


def test_reject_dead_letters_that_event_alone(memlog: EventLog) -> None:
    app = App("t")
    calls = Counter[str]()

    @app.function(topic="in", outputs=("out",), batch=50, retries=2, backoff_s=0.01, max_backoff_s=0.02)
    def check(batch: list[CloudEvent], ctx: BatchContext) -> None:
        for i, e in enumerate(batch):
            calls[e.get_id()] += 1
            if _n(e) % 7 == 0:
                ctx.reject(i, PermanentError(f"n={_n(e)} is a multiple of 7; send another"))
                continue
            ctx[i].emit("out", ctx[i].new_event("checked", {"n": _n(e)}))

    memlog.create_topic(TopicSpec("in", partitions=1))
    memlog.create_topic(TopicSpec("out"))
    produce(memlog, "in", events(40), key=None)
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.check"].succeeded == 34 and host.metrics()["t.check"].dead_lettered == 6)
        wait_for(lambda: committed(memlog, "kawa-fn-t-check", "in") == {0: 40})
    dead = read_all(memlog, "in.dlq", 6)
    assert sorted(_n(from_record(r)) for r in dead) == [0, 7, 14, 21, 28, 35]
    assert {r.header("kawa-dlq-attempts") for r in dead} == {b"1"}  # permanent: no retry
    assert dead[0].header("kawa-dlq-message") == b"n=0 is a multiple of 7; send another"
    out = read_all(memlog, "out", 34)
    assert sorted(_n(from_record(r)) for r in out) == [n for n in range(40) if n % 7]
    assert set(calls.values()) == {1}  # nothing ran twice


def test_a_batch_that_raises_is_split_and_only_the_bad_event_is_retried_and_dead_lettered(memlog: EventLog) -> None:
    app = App("t")
    attempts = Counter[int]()
    gate = threading.Event()

    @app.function(topic="in", reply_topic="out", batch=32, concurrency=1, max_scale=1, retries=2, backoff_s=0.01,
                  max_backoff_s=0.02)  # fmt: skip
    def fragile(batch: list[CloudEvent], ctx: BatchContext) -> list[CloudEvent]:
        gate.wait(10)
        for e in batch:
            attempts[_n(e)] += 1
        if any(_n(e) == 13 for e in batch):
            raise ValueError("13 cannot be read")
        return [ctx[i].new_event("ok", {"n": _n(e)}) for i, e in enumerate(batch)]

    memlog.create_topic(TopicSpec("in", partitions=1))
    produce(memlog, "in", events(30), key=None)
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.fragile"].queued > 0 or host.metrics()["t.fragile"].in_flight > 1)
        gate.set()
        wait_for(lambda: host.metrics()["t.fragile"].succeeded == 29 and host.metrics()["t.fragile"].dead_lettered == 1)
        wait_for(lambda: committed(memlog, "kawa-fn-t-fragile", "in") == {0: 30})
    (dead,) = read_all(memlog, "in.dlq", 1)
    assert _n(from_record(dead)) == 13 and dead.header("kawa-dlq-attempts") == b"3"
    assert dead.header("kawa-dlq-message") == b"13 cannot be read"
    replies = [from_record(r) for r in read_all(memlog, "out", 29)]
    assert sorted(_n(r) for r in replies) == [n for n in range(30) if n != 13]  # each good event replied once
    assert attempts[13] >= 3 and max(v for k, v in attempts.items() if k != 13) <= 2


def test_a_redelivered_event_is_not_handled_again(memlog: EventLog) -> None:
    app = App("t")
    seen = Counter[str]()

    @app.function(topic="in", batch=20)
    def count(batch: list[CloudEvent], ctx: BatchContext) -> None:
        seen.update(e.get_id() for e in batch)

    memlog.create_topic(TopicSpec("in", partitions=1))
    dedupe = MemoryDedupeStore()
    produce(memlog, "in", events(25), key=None)
    with FunctionHost(app, log=memlog, options=FAST, dedupe=dedupe) as host:
        wait_for(lambda: host.metrics()["t.count"].succeeded == 25)
        produce(memlog, "in", events(25), key=None)  # the same 25 events again (same source and ids)
        wait_for(lambda: host.metrics()["t.count"].duplicates == 25)
    assert set(seen.values()) == {1} and len(seen) == 25


def test_kawa_testing_invoke_runs_a_batched_handler_on_one_event() -> None:
    app = App("t")

    @app.function(topic="in", reply_topic="out", batch=10)
    def half(batch: list[CloudEvent], ctx: BatchContext) -> list[CloudEvent | None]:
        out: list[CloudEvent | None] = []
        for i, e in enumerate(batch):
            if _n(e) % 2:
                ctx.reject(i, PermanentError("odd"))
                out.append(None)
            else:
                out.append(ctx[i].new_event("half", {"n": _n(e) // 2}))
        return out

    ok = invoke(half, new_event("x", "/t", {"n": 8}))
    assert ok.outcome == "ok" and [_n(r) for r in ok.replies] == [4]
    odd = invoke(half, new_event("x", "/t", {"n": 3}))
    assert odd.outcome == "dead-lettered" and odd.reason == "odd"


def test_a_batched_handler_must_be_sync_and_return_one_entry_per_event() -> None:
    app = App("t")
    with pytest.raises(InvalidFunction, match="batched handler"):

        @app.function(topic="in", batch=8)
        async def later(batch: list[CloudEvent], ctx: BatchContext) -> None: ...

    @app.function(topic="in", batch=8)
    def short(batch: list[CloudEvent], ctx: BatchContext) -> list[None]:
        return []

    out = invoke(short, new_event("x", "/t", {"n": 1}))
    assert out.outcome == "failed" and "one entry per event" in str(out.error)


def test_a_record_that_is_no_cloudevent_is_dead_lettered_beside_the_batch(memlog: EventLog) -> None:
    app = App("t")
    seen: list[int] = []

    @app.function(topic="in", batch=16, concurrency=1, max_scale=1)
    def take(batch: list[CloudEvent], ctx: BatchContext) -> None:
        seen.extend(_n(e) for e in batch)

    memlog.create_topic(TopicSpec("in", partitions=1))
    producer = memlog.producer()
    producer.produce("in", b"not a cloudevent")  # no ce_ headers: dead-lettered without reaching the handler
    producer.flush()
    produce(memlog, "in", events(10), key=None)
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["t.take"].succeeded == 10 and host.metrics()["t.take"].dead_lettered == 1)
        wait_for(lambda: committed(memlog, "kawa-fn-t-take", "in") == {0: 11})
    (dead,) = read_all(memlog, "in.dlq", 1)
    assert dead.value == b"not a cloudevent"
    assert sorted(seen) == list(range(10))
