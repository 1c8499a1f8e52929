"""The delayed-outcome join: orphans, late outcomes, duplicates, outcomes that never come, the entity window,
a restart in the middle (pure replay and on a real embedded log), checked against a brute-force join."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.config import KawaConfig, LogConfig
from kawa.events.ref import EventRef
from kawa.log import EventLog, TopicSpec, open_log
from kawa.monitor.errors import MonitorError
from kawa.monitor.join import (
    Advance,
    JoinConfig,
    JoinState,
    Matured,
    advance,
    on_decision,
    on_outcome,
    replay,
    restore,
    snapshot,
)
from kawa.monitor.outcomes import OutcomeJoiner, publish
from kawa.monitor.records import DecisionRecord, OutcomeEvent


def dec(i: int, at: float, entity: str = "p", version: int = 1) -> DecisionRecord:
    return DecisionRecord(EventRef("kawa/test", f"ev-{i}"), "m", version, entity, at, score=i / 100)


def ref(i: int) -> EventRef:
    return EventRef("kawa/test", f"ev-{i}")


def labels(result: Advance) -> dict[str, int | None]:
    return {m.decision.ref.id: m.label for m in result.matured}


def test_an_outcome_joins_its_decision_and_matures_at_the_horizon() -> None:
    state = JoinState(JoinConfig(horizon=10.0))
    on_decision(state, dec(1, 0.0))
    on_decision(state, dec(2, 5.0))
    assert on_outcome(state, OutcomeEvent(4.0, ref=ref(1), label=1)) == "joined"
    assert advance(state, 9.9).matured == ()  # not matured yet: an outcome could still come
    first = advance(state, 10.0)
    assert labels(first) == {"ev-1": 1} and first.matured[0].observed and first.matured[0].matured_at == 10.0
    second = advance(state, 20.0)
    assert labels(second) == {"ev-2": 0} and not second.matured[0].observed  # never came: a negative
    assert second.expired == (dec(2, 5.0),)
    c = state.counts()
    assert (c.decisions, c.outcomes, c.joined, c.matured, c.expired, c.excluded) == (2, 1, 1, 2, 1, 0)


def test_never_arriving_outcomes_can_be_excluded_instead() -> None:
    state = JoinState(JoinConfig(horizon=10.0, missing="exclude"))
    on_decision(state, dec(1, 0.0))
    result = advance(state, 100.0)
    assert result.matured == () and result.expired == (dec(1, 0.0),)
    assert state.counts().excluded == 1 and state.counts().expired == 1


def test_an_outcome_before_its_decision_is_held_until_the_decision_arrives_or_the_horizon_passes() -> None:
    state = JoinState(JoinConfig(horizon=10.0))
    assert on_outcome(state, OutcomeEvent(3.0, ref=ref(1), label=1)) == "orphan"
    assert on_outcome(state, OutcomeEvent(3.0, ref=ref(9), label=1)) == "orphan"
    assert state.counts().held == 2
    on_decision(state, dec(1, 1.0))
    assert labels(advance(state, 12.0)) == {"ev-1": 1}
    advance(state, 13.0)  # ev-9's decision never came: released at 3 + 10
    c = state.counts()
    assert (c.orphans, c.orphans_matched, c.unmatched, c.held) == (2, 1, 1, 0)


def test_duplicates_count_once_and_a_conflicting_label_is_counted() -> None:
    state = JoinState(JoinConfig(horizon=10.0))
    on_decision(state, dec(1, 0.0))
    on_decision(state, dec(2, 0.0))
    assert not on_decision(state, dec(1, 0.0))  # redelivered decision
    assert on_outcome(state, OutcomeEvent(2.0, ref=ref(1), label=1)) == "joined"
    assert on_outcome(state, OutcomeEvent(2.0, ref=ref(1), label=1)) == "duplicate"
    assert on_outcome(state, OutcomeEvent(2.0, ref=ref(2), label=0, id="a")) == "joined"
    assert on_outcome(state, OutcomeEvent(5.0, ref=ref(2), label=0, id="a")) == "duplicate"  # same source id
    assert on_outcome(state, OutcomeEvent(3.0, ref=ref(2), label=1)) == "joined"
    result = advance(state, 10.0)
    assert labels(result) == {"ev-1": 1, "ev-2": 1} and len(result.matured) == 2
    c = state.counts()
    assert (c.decisions, c.duplicate_decisions, c.outcomes, c.duplicates, c.conflicts) == (2, 1, 3, 2, 1)


def test_late_outcomes_are_counted_and_returned_not_dropped() -> None:
    state = JoinState(JoinConfig(horizon=10.0))
    on_decision(state, dec(1, 0.0))
    on_decision(state, dec(2, 0.0))
    assert labels(advance(state, 10.0)) == {"ev-1": 0, "ev-2": 0}
    late = OutcomeEvent(11.0, ref=ref(1), label=1)
    assert on_outcome(state, late) == "late"
    # observed after maturity by its own time, even when it is read before the advance
    on_decision(state, dec(3, 10.0))
    early_read = OutcomeEvent(25.0, ref=ref(3), label=1)
    assert on_outcome(state, early_read) == "late"
    result = advance(state, 30.0)
    assert result.late == (late, early_read)
    assert labels(result) == {"ev-3": 0}
    assert state.counts().late == 2 and state.counts().joined == 0
    assert advance(state, 31.0).late == ()  # returned once


def test_by_entity_an_outcome_applies_to_decisions_in_the_window_before_it() -> None:
    state = JoinState(JoinConfig(horizon=6.0, by="entity", grace=2.0))
    for i, at in enumerate([0.0, 3.0, 5.0, 9.0]):
        on_decision(state, dec(i, at, entity="p1"))
    on_decision(state, dec(10, 4.0, entity="p2"))
    # onset at 8, known at 9.5: decisions at 3 and 5 are within 6 h before it; 0 is too early, 9 is after
    assert on_outcome(state, OutcomeEvent(9.5, entity="p1", at=8.0, label=1)) == "joined"
    result = advance(state, 100.0)
    assert labels(result) == {"ev-0": 0, "ev-1": 1, "ev-2": 1, "ev-3": 0, "ev-10": 0}
    # maturity is decision time + horizon + grace
    assert [m.matured_at for m in result.matured] == [8.0, 11.0, 12.0, 13.0, 17.0]


def test_an_entity_outcome_observed_after_the_grace_is_late_for_that_decision() -> None:
    state = JoinState(JoinConfig(horizon=6.0, by="entity", grace=1.0))
    on_decision(state, dec(1, 0.0, entity="p"))
    on_decision(state, dec(2, 4.0, entity="p"))
    assert on_outcome(state, OutcomeEvent(8.0, entity="p", at=5.0, label=1)) == "joined"  # late for ev-1 only
    result = advance(state, 20.0)
    assert labels(result) == {"ev-1": 0, "ev-2": 1}
    assert state.counts().late == 1 and len(result.late) == 1


# ---- a random stream, joined step by step, against a brute-force join -------------------------------------


def stream(seed: int, n: int, by: str) -> tuple[list[DecisionRecord], list[OutcomeEvent]]:
    rng = random.Random(seed)
    decisions = [dec(i, round(rng.uniform(0, 100), 1), entity=f"e{rng.randrange(5)}") for i in range(n)]
    outcomes = []
    for d in decisions:
        if rng.random() < 0.6:
            at = d.decided_at + rng.uniform(0, 12) if by == "entity" else None
            seen = (at if at is not None else d.decided_at) + rng.expovariate(0.3)
            label = int(rng.random() < 0.7)
            if by == "ref":
                outcomes.append(OutcomeEvent(round(seen, 1), ref=d.ref, label=label))
            else:
                outcomes.append(OutcomeEvent(round(seen, 1), entity=d.entity, at=round(at or 0.0, 1), label=label))
            if rng.random() < 0.1:
                outcomes.append(outcomes[-1])  # delivered twice
    return decisions, outcomes


def brute_force(config: JoinConfig, decisions: list[DecisionRecord], outcomes: list[OutcomeEvent]) -> dict:
    out: dict[str, int | None] = {}
    for d in decisions:
        maturity = d.decided_at + config.wait
        hits = [
            o.label
            for o in outcomes
            if o.observed_at <= maturity
            and (
                o.ref == d.ref
                if config.by == "ref"
                else o.entity == d.entity and o.time - config.horizon <= d.decided_at <= o.time
            )
        ]
        if hits or config.missing == "negative":
            out[d.ref.id] = max((h for h in hits if h is not None), default=0)
    return out


def steps(
    decisions: list[DecisionRecord], outcomes: list[OutcomeEvent], rng: random.Random, width: float
) -> Iterator[tuple[list[DecisionRecord], list[OutcomeEvent], float]]:
    """Honest steps: every record with a time up to the watermark is read before the advance to it; the order
    of the records within a step is shuffled."""
    end = max([d.decided_at for d in decisions] + [o.observed_at for o in outcomes]) + 100
    prev, w = -math.inf, 0.0
    while w < end:
        w += width
        ds = [d for d in decisions if prev < d.decided_at <= w]
        os_ = [o for o in outcomes if prev < o.observed_at <= w]
        prev = w
        rng.shuffle(ds)
        rng.shuffle(os_)
        yield ds, os_, w


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    by=st.sampled_from(["ref", "entity"]),
    missing=st.sampled_from(["negative", "exclude"]),
    width=st.sampled_from([0.7, 3.0, 11.0]),
)
def test_the_streaming_join_equals_a_brute_force_join_whatever_the_arrival_order(
    seed: int, by: str, missing: str, width: float
) -> None:
    config = JoinConfig(horizon=8.0, by=by, missing=missing, grace=2.0)  # type: ignore[arg-type]
    decisions, outcomes = stream(seed, 40, by)
    state = JoinState(config)
    results = replay(state, steps(decisions, outcomes, random.Random(seed), width))
    got = {m.decision.ref.id: m.label for r in results for m in r.matured}
    assert sum(len(r.matured) for r in results) == len(got)  # each decision matures once
    assert got == brute_force(config, decisions, outcomes)
    c = state.counts()
    assert c.pending == 0 and c.held == 0 and c.decisions == len(decisions)
    assert c.outcomes + c.duplicates == len(outcomes)
    assert c.matured + c.excluded == len(decisions)


def test_a_restart_that_replays_the_steps_so_far_gives_identical_results() -> None:
    config = JoinConfig(horizon=8.0, by="entity", grace=2.0)
    decisions, outcomes = stream(7, 200, "entity")
    plan = list(steps(decisions, outcomes, random.Random(7), 2.0))
    whole = replay(JoinState(config), plan)
    half = len(plan) // 2
    before = replay(JoinState(config), plan[:half])
    restarted = JoinState(config)
    replay(restarted, plan[:half])  # rebuilt from the log, results discarded
    after = replay(restarted, plan[half:])
    assert before + after == whole
    full = JoinState(config)
    replay(full, plan)
    assert restarted.counts() == full.counts()
    assert sum(len(r.matured) for r in whole) == 200 and full.counts().orphans > 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), by=st.sampled_from(["ref", "entity"]), cut=st.floats(0.1, 0.9))
def test_a_snapshot_restored_from_json_continues_exactly_like_the_original(seed: int, by: str, cut: float) -> None:
    import json

    config = JoinConfig(horizon=8.0, by=by, grace=2.0)  # type: ignore[arg-type]
    decisions, outcomes = stream(seed, 60, by)
    plan = list(steps(decisions, outcomes, random.Random(seed), 2.0))
    at = int(len(plan) * cut)
    original = JoinState(config)
    replay(original, plan[:at])
    copy = restore(json.loads(json.dumps(snapshot(original), allow_nan=False)))
    assert snapshot(copy) == snapshot(original) and copy.counts() == original.counts()
    assert replay(copy, plan[at:]) == replay(original, plan[at:])
    assert copy.counts() == original.counts()


def test_a_damaged_snapshot_is_refused() -> None:
    with pytest.raises(MonitorError, match="not a join snapshot"):
        restore({"format": "other"})
    data = snapshot(JoinState(JoinConfig(horizon=1.0)))
    del data["timers"]
    with pytest.raises(MonitorError, match="damaged"):
        restore(data)


# ---- the joiner on a real embedded log ---------------------------------------------------------------------


@pytest.fixture(params=["embedded", "memory"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    config = KawaConfig(home=tmp_path / ".kawa", log=LogConfig(segment_bytes=4096))
    opened = open_log(f"embedded:{tmp_path / 'log'}" if request.param == "embedded" else "memory:", config)
    opened.create_topic(TopicSpec("decisions", 2))
    opened.create_topic(TopicSpec("outcomes", 1))
    yield opened
    opened.close()


def write(log: EventLog, items: list[DecisionRecord | OutcomeEvent], topics: tuple[str, str]) -> None:
    producer = log.producer()
    for item in items:
        publish(producer, topics[0] if isinstance(item, DecisionRecord) else topics[1], item.to_event("kawa/test"))
    producer.close()


def run(joiner: OutcomeJoiner, batches: list[tuple[list[DecisionRecord | OutcomeEvent], float]]) -> list[Matured]:
    out: list[Matured] = []
    for items, watermark in batches:
        write(joiner.log, items, joiner.topics)
        out += joiner.step(watermark).matured
    return out


def test_the_joiner_on_the_log_rebuilds_its_state_after_a_restart(log: EventLog) -> None:
    config = JoinConfig(horizon=8.0, grace=2.0)
    decisions, outcomes = stream(3, 60, "ref")
    items: list[DecisionRecord | OutcomeEvent] = sorted(
        [*decisions, *outcomes], key=lambda x: x.decided_at if isinstance(x, DecisionRecord) else x.observed_at
    )
    batches = [(items[i : i + 15], 0.0) for i in range(0, len(items), 15)]
    batches = [
        (b, max(x.decided_at if isinstance(x, DecisionRecord) else x.observed_at for x in b)) for b, _ in batches
    ]
    batches.append(([], 1000.0))
    half = len(batches) // 2

    first = OutcomeJoiner(log, config, checkpoints="ckpt-a").start()
    before = run(first, batches[:half])
    first.close()  # "crash": a new process rebuilds from the log
    second = OutcomeJoiner(log, config, checkpoints="ckpt-a").start()
    assert second.counts == first.counts and second.steps == half
    after = run(second, batches[half:])
    second.close()

    # an uninterrupted run on topics of their own, fed the same batches
    log.create_topic(TopicSpec("decisions-2", 2))
    log.create_topic(TopicSpec("outcomes-2", 1))
    whole = OutcomeJoiner(log, config, decisions="decisions-2", outcomes="outcomes-2", checkpoints="ckpt-b").start()
    assert run(whole, batches) == before + after
    assert whole.counts == second.counts
    whole.close()
    got = {m.decision.ref.id: m.label for m in before + after}
    assert got == brute_force(config, decisions, outcomes) and len(before + after) == 60
    third = OutcomeJoiner(log, config, checkpoints="ckpt-a").start()  # a second worker: same state
    assert third.counts == second.counts and third.counts.pending == 0
    assert third.step(2000.0).matured == ()  # nothing is emitted twice
    third.close()


def test_the_joiner_restarts_from_its_last_snapshot(log: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    import kawa.monitor.outcomes as outcomes_module

    monkeypatch.setattr(outcomes_module, "PART_BYTES", 2048)  # a snapshot in several parts
    config = JoinConfig(horizon=8.0, by="entity", grace=2.0)
    decisions, outcomes = stream(4, 80, "entity")
    items: list[DecisionRecord | OutcomeEvent] = sorted(
        [*decisions, *outcomes], key=lambda x: x.decided_at if isinstance(x, DecisionRecord) else x.observed_at
    )
    times = [x.decided_at if isinstance(x, DecisionRecord) else x.observed_at for x in items]
    batches = [(items[i : i + 10], max(times[i : i + 10])) for i in range(0, len(items), 10)]
    batches.append(([], 1000.0))
    half = 7
    first = OutcomeJoiner(log, config, checkpoints="ckpt-s", snapshot_every=3).start()
    before = run(first, batches[:half])
    first.close()
    assert log.describe_topic("ckpt-s").partitions[0].end_offset > half + 2 * 2  # 7 steps, 2 snapshots in parts
    second = OutcomeJoiner(log, config, checkpoints="ckpt-s", snapshot_every=3).start()
    assert second.replayed_steps == 1  # the snapshot after step 6, then step 7 replayed
    assert second.counts == first.counts and snapshot(second.state) == snapshot(first.state)
    after = run(second, batches[half:])
    second.close()
    log.create_topic(TopicSpec("decisions-3", 2))
    log.create_topic(TopicSpec("outcomes-3", 1))
    whole = OutcomeJoiner(log, config, decisions="decisions-3", outcomes="outcomes-3", checkpoints="ckpt-t").start()
    assert run(whole, batches) == before + after and whole.counts == second.counts
    whole.close()
    other = OutcomeJoiner(log, JoinConfig(horizon=9.0, by="entity"), checkpoints="ckpt-s")
    with pytest.raises(MonitorError, match="checkpoint topic of its own"):
        other.start()
    other.close()


def test_the_joiner_skips_foreign_and_invalid_records(log: EventLog) -> None:
    from kawa.events.cloudevents import new_event

    producer = log.producer()
    publish(producer, "decisions", new_event("kawa.prediction", "s", {"model": "m"}))
    producer.send("decisions", b"not an event")
    publish(producer, "decisions", dec(1, 0.0).to_event("s"))
    producer.close()
    joiner = OutcomeJoiner(log, JoinConfig(horizon=1.0)).start()
    assert [m.decision for m in joiner.step().matured] == []  # watermark = latest time (0.0) - lateness
    assert joiner.step(5.0).matured[0].decision == dec(1, 0.0)
    assert joiner.invalid == 1 and joiner.counts.decisions == 1
    joiner.close()


def test_the_joiner_loop_steps_until_stopped(log: EventLog) -> None:
    import threading

    write(log, [dec(1, 0.0), dec(2, 50.0), OutcomeEvent(1.0, ref=ref(1), label=1)], ("decisions", "outcomes"))
    joiner = OutcomeJoiner(log, JoinConfig(horizon=10.0)).start()
    stop = threading.Event()
    seen: list[Advance] = []

    def on_step(result: Advance) -> None:
        seen.append(result)
        if len(seen) == 1:
            write(log, [dec(3, 100.0)], ("decisions", "outcomes"))  # moves the watermark past ev-2's maturity
        else:
            stop.set()

    joiner.run(on_step, stop, interval_s=0.0)
    assert [labels(r) for r in seen] == [{"ev-1": 1}, {"ev-2": 0}]
    joiner.close()
