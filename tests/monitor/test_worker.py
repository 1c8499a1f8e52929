"""The monitor as a consumer group (kawa.monitor.worker) on the in-memory log: members that join and leave rebuild
the models of the partitions they are given by replaying them, and together they write exactly the events that one
monitoring service per model writes over the same decisions, none twice."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pytest

from kawa.events.cloudevents import to_kafka
from kawa.events.ref import EventRef
from kawa.log.base import EventLog, TopicPartition, TopicSpec
from kawa.log.memory import MemoryLog
from kawa.log.partitioner import partition_for_key
from kawa.monitor.records import DecisionRecord
from kawa.monitor.service import MonitorConfig, MonitorService
from kawa.monitor.sketch import Profile
from kawa.monitor.status import ALERT_EVENT, WINDOW_EVENT, MonitorEvent, read_events
from kawa.monitor.worker import GROUP, MonitorWorker, ProfilesOf
from tests.monitor.test_service import FEATURES, T0, reference
from tests.waiting import wait_for

MODELS = ("alpha", "beta", "epsilon", "zeta")  # partitions 0, 0, 1, 1 of two (murmur2 of the name)
SHIFTED = "beta"
PARTITIONS = 2
TEMPLATE = MonitorConfig("*", pane_s=300.0, panes=1, window_size=250, window_arl0=100.0, sequential_arl0=1e6,
                         shift=1.0, sequential_mode="mean")  # fmt: skip


def model_decisions(model: str, n: int, *, start: int, seed: int) -> list[DecisionRecord]:
    """``n`` decisions of ``model``, one per second from ``T0 + start``; ``SHIFTED``'s feature ``a`` moves by 1.5 sd
    from second 1200 to 2100."""
    rng = np.random.default_rng([seed, MODELS.index(model)])
    x = rng.normal(size=(n, len(FEATURES)))
    seconds = np.arange(start, start + n)
    if model == SHIFTED:
        x[(seconds >= 1200) & (seconds < 2100), 0] += 1.5
    wards, scores = rng.choice(["icu", "er", "med"], size=n), rng.uniform(size=n)
    return [
        DecisionRecord(EventRef(f"kawa://test/{model}", f"e{s}"), model, 1, f"p{s % 97}", T0 + float(s),
                       score=float(scores[i]),
                       features={**{f: float(x[i, j]) for j, f in enumerate(FEATURES)}, "ward": str(wards[i])})
        for i, s in enumerate(seconds)
    ]  # fmt: skip


def segment(start: int, n: int, seed: int) -> list[DecisionRecord]:
    """Every model's decisions of seconds ``start .. start + n``, interleaved in time as a live stream has them."""
    per_model = [model_decisions(m, n, start=start, seed=seed) for m in MODELS]
    return [d for row in zip(*per_model, strict=True) for d in row]


def write(log: EventLog, records: Iterable[DecisionRecord], topic: str = "decisions") -> None:
    """Produce the records (binary-mode CloudEvents keyed by model, as ``ctx.decide`` writes them) and flush."""
    producer = log.producer()
    for r in records:
        key, value, headers = to_kafka(r.to_event("kawa://test/fn"))
        producer.produce(topic, value, key=key, headers=headers)
    producer.close()


def profile_of(ref: Profile) -> ProfilesOf:
    return lambda _model, version: ref if version == 1 else None


def close(a: Any, b: Any) -> bool:
    """Equal JSON values, floats to 1e-9 relative: the CUSUMs sum each batch of records in one block, so their
    last bits depend on how the records were batched (a single service fed by a live stream differs so too)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_same_events(got: Sequence[MonitorEvent], expected: Sequence[MonitorEvent]) -> None:
    """The same event ids, each once, with the same type, model, version, time and data."""
    assert len({e.id for e in got}) == len(got), "an event was written twice"
    mine, theirs = {e.id: e for e in got}, {e.id: e for e in expected}
    assert sorted(mine) == sorted(theirs), (
        f"missing: {[(theirs[i].type, theirs[i].model) for i in theirs.keys() - mine.keys()]}, "
        f"extra: {[(mine[i].type, mine[i].model) for i in mine.keys() - theirs.keys()]}"
    )
    for eid, e in mine.items():
        t = theirs[eid]
        assert (e.type, e.model, e.version, e.time) == (t.type, t.model, t.version, t.time)
        assert close(json.loads(json.dumps(e.data)), json.loads(json.dumps(t.data))), (e.data, t.data)


def single_runs(log: EventLog, ref: Profile, topic: str, template: MonitorConfig = TEMPLATE) -> list[MonitorEvent]:
    """What one MonitorService per model (the embedded shape) writes over the decisions on ``log``."""
    for model in MODELS:
        config = dataclasses.replace(template, model=model, alerts_topic=topic)
        service = MonitorService(log, config, lambda version: ref if version == 1 else None).start()
        service.step()
        service.close()
    return read_events(log, topic)


def caught_up(log: EventLog) -> bool:
    lag = log.lag(GROUP, ["decisions"])
    return bool(lag) and all(row.lag == 0 for row in lag)


def step_until(workers: Sequence[MonitorWorker], done: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    def check() -> bool:
        for w in workers:
            w.step(timeout_s=0.02)
        return done()

    wait_for(check, timeout=timeout, what=what, interval=0.0)


def test_members_that_join_and_leave_rebuild_their_partitions_and_write_what_one_service_per_model_writes() -> None:
    assert [partition_for_key(m.encode(), PARTITIONS) for m in MODELS] == [0, 0, 1, 1]
    ref = reference()
    log = MemoryLog()
    log.create_topic(TopicSpec("decisions", PARTITIONS, retention_ms=None))
    both = {TopicPartition("decisions", 0), TopicPartition("decisions", 1)}
    a = MonitorWorker(log, TEMPLATE, profile_of(ref), session_timeout_ms=2000, client_id="a").start()
    write(log, segment(0, 1000, seed=1))
    step_until([a], lambda: caught_up(log), "member a alone to process the first segment")
    assert a.owned == both and sorted(a.monitors) == list(MODELS) and a.rebuilds == 2

    # A second member joins: one partition moves to it, it replays that partition and writes nothing already there.
    b = MonitorWorker(log, TEMPLATE, profile_of(ref), session_timeout_ms=2000, client_id="b").start()
    step_until([a, b], lambda: len(a.owned) == len(b.owned) == 1 and a.owned | b.owned == both and b.records == 2000,
               "the rebalance, and the new member's replay of its partition (two models, 1000 decisions each)")
    assert b.emitted == 0 and b.rebuilds == 1
    moved = next(iter(b.owned)).partition
    assert sorted(b.monitors) == [m for m in MODELS if partition_for_key(m.encode(), PARTITIONS) == moved]
    assert sorted(a.monitors) == [m for m in MODELS if m not in b.monitors]  # a dropped the revoked models
    write(log, segment(1000, 1000, seed=2))  # the shift of beta begins
    step_until([a, b], lambda: caught_up(log), "both members to process the second segment")
    assert a.emitted > 0 and b.emitted > 0

    # It leaves: its partition comes back to a, which rebuilds it from the start (the state it had is stale).
    b.close()
    step_until([a], lambda: a.owned == both and len(a.monitors) == len(MODELS), "the partition to come back")
    assert a.rebuilds == 3 and sorted(a.monitors) == list(MODELS)
    write(log, segment(2000, 1000, seed=3))  # beta back to its reference: its alerts resolve
    step_until([a], lambda: caught_up(log), "member a to process the third segment")
    a.close()

    events = read_events(log)
    expected = single_runs(log, ref, "reference.alerts")
    assert_same_events(events, expected)
    alerted = {e.model for e in expected if e.type == ALERT_EVENT}
    assert alerted == {SHIFTED}
    assert {e.model for e in expected if e.type == WINDOW_EVENT} == set(MODELS)


def test_a_partition_read_with_a_gap_is_rebuilt_from_its_start() -> None:
    """A member whose partition moved away and back between two of its polls resumes at the group's commit, past
    what it processed: the jump in offsets makes it replay the partition instead of going on with stale state."""
    ref = reference()
    log = MemoryLog()
    log.create_topic(TopicSpec("decisions", 1, retention_ms=None))
    tp = TopicPartition("decisions", 0)
    only = ("alpha",)
    a = MonitorWorker(log, TEMPLATE, profile_of(ref), models=only).start()
    write(log, [d for d in segment(0, 700, seed=4) if d.model == "alpha"])
    step_until([a], lambda: caught_up(log), "the first decisions")
    assert a.rebuilds == 1 and a.monitors["alpha"].core.records == 700
    # Another member (since gone) processed and committed more than `a` has seen.
    write(log, [d for d in segment(700, 600, seed=5) if d.model == "alpha"])
    assert a._consumer is not None
    a._consumer.seek(tp, 1000)
    step_until([a], lambda: caught_up(log) and a.rebuilds == 2, "the gap to be noticed")
    assert a.monitors["alpha"].core.records == 1300  # replayed from offset 0, all of it
    assert a.monitors.keys() == {"alpha"}
    a.close()
    events = read_events(log)
    assert len({e.id for e in events}) == len(events)


def test_only_the_models_asked_for_are_monitored() -> None:
    models = ("zeta",)
    ref = reference()
    log = MemoryLog()
    log.create_topic(TopicSpec("decisions", PARTITIONS, retention_ms=None))
    w = MonitorWorker(log, TEMPLATE, profile_of(ref), models=models).start()
    write(log, segment(0, 400, seed=6))
    step_until([w], lambda: caught_up(log), "the decisions")
    assert set(w.monitors) == set(models) and w.records == 400
    w.close()
    assert {e.model for e in read_events(log)} == set(models)


def test_with_outcomes_the_join_moves_with_its_model_and_the_final_performance_is_a_single_services() -> None:
    """The join's steps are recorded on each model's checkpoint topic: the member a model moves to rebuilds its join
    from there, so the matured performance it goes on to publish is what one service per model publishes."""
    from kawa.monitor.join import JoinConfig
    from kawa.monitor.records import OutcomeEvent
    from kawa.monitor.status import PERFORMANCE_EVENT

    ref = reference()
    log = MemoryLog()
    log.create_topic(TopicSpec("decisions", PARTITIONS, retention_ms=None))
    config = dataclasses.replace(TEMPLATE, join=JoinConfig(horizon=60.0), cohort_s=200.0, bootstrap=20)
    rng = np.random.default_rng(7)
    # The single services run on a log of their own (the same records): the join's checkpoint topic is per model.
    alone = MemoryLog()
    alone.create_topic(TopicSpec("decisions", PARTITIONS, retention_ms=None))

    def write_with_outcomes(records: list[DecisionRecord]) -> None:
        outcomes = [  # calibrated scores; every tenth decision never gets its outcome
            OutcomeEvent(r.decided_at + 30, ref=r.ref, label=int(rng.uniform() < (r.score or 0.0)))
            for r in records if int(r.decided_at) % 10
        ]  # fmt: skip
        for target in (log, alone):
            write(target, records)
            producer = target.producer()
            for outcome in outcomes:
                key, value, headers = to_kafka(outcome.to_event("kawa://test/outcomes"))
                producer.produce("outcomes", value, key=key, headers=headers)
            producer.close()

    def join(workers: list[MonitorWorker], what: str) -> None:
        """Step until every decision is read, then until every member's joins have stepped once more."""
        step_until(workers, lambda: caught_up(log), what)
        marks = [w.join_steps for w in workers]
        step_until(workers, lambda: all(w.join_steps > m for w, m in zip(workers, marks, strict=True)), what)

    a = MonitorWorker(log, config, profile_of(ref), join_interval_s=0.3).start()  # creates the outcomes topic
    alone.create_topic(TopicSpec("outcomes", 1, retention_ms=None))
    write_with_outcomes(segment(0, 400, seed=8))
    join([a], "member a to join the first segment")
    b = MonitorWorker(log, config, profile_of(ref), join_interval_s=0.3).start()
    step_until([a, b], lambda: len(a.owned) == len(b.owned) == 1 and b.records == 800, "the rebalance")
    assert all(state.joiner is not None and state.joiner.replayed_steps > 0 for state in b.monitors.values())
    write_with_outcomes(segment(400, 400, seed=9))
    join([a, b], "both members to join the second segment")
    a.close()
    b.close()

    def last_per_cohort(events: list[MonitorEvent]) -> dict[tuple[str, int, float, str], MonitorEvent]:
        out = {}
        for e in events:
            if e.type == PERFORMANCE_EVENT:
                out[(e.model, e.version, e.data["cohort"]["start"], e.data["cohort"]["arm"])] = e
        return out

    events = read_events(log)
    expected = single_runs(alone, ref, "reference.alerts", config)
    assert_same_events([e for e in events if e.type != PERFORMANCE_EVENT],
                       [e for e in expected if e.type != PERFORMANCE_EVENT])  # fmt: skip
    got, want = last_per_cohort(events), last_per_cohort(expected)
    assert sorted(got) == sorted(want) and len(want) == 4 * len(MODELS)  # cohorts of 200 s over 800 s
    # The label-free estimate is of the decisions pending when the event was written, which depends on when the
    # join stepped (a single service stepping as the stream comes differs so too): the matured metrics do not.
    assert_same_events(*([dataclasses.replace(e, data={k: v for k, v in e.data.items() if k != "label_free"})
                          for e in found.values()] for found in (got, want)))  # fmt: skip
    assert all(e.data["n"] > 0 and e.data["metrics"]["auroc"]["estimate"] > 0.5 for e in got.values())
    assert len({e.id for e in events}) == len(events)


def test_one_models_decisions_on_two_partitions_are_refused_with_what_to_do() -> None:
    from kawa.monitor.errors import MonitorError

    log = MemoryLog()
    log.create_topic(TopicSpec("decisions", PARTITIONS, retention_ms=None))
    producer = log.producer()
    for i, record in enumerate(model_decisions("alpha", 4, start=0, seed=10)):
        key, value, headers = to_kafka(record.to_event("kawa://test/fn"))
        producer.produce("decisions", value, key=key, headers=headers, partition=i % 2)  # not by its key
    producer.close()
    w = MonitorWorker(log, TEMPLATE, profile_of(reference())).start()
    try:
        with pytest.raises(MonitorError, match="key decision records by their model"):
            wait_for(lambda: w.step(timeout_s=0.05) is None, timeout=30, what="the refusal", interval=0.0)
    finally:
        w.close()


def test_kawa_worker_monitor_runs_alone() -> None:
    from typer.testing import CliRunner

    from kawa.cli import _register
    from kawa.cli.app import app
    from kawa.errors import KawaError

    _register()
    result = CliRunner().invoke(app, ["--log", "memory:", "worker", "--monitor", "--app", "x:app"])
    assert result.exit_code != 0 and isinstance(result.exception, KawaError)
    assert "runs the monitor alone" in str(result.exception)
    shown = CliRunner().invoke(app, ["worker", "--help"])
    assert shown.exit_code == 0 and "--monitor" in shown.output and "kawa-monitor" in shown.output
