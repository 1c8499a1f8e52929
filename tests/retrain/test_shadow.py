"""The shadow phase's and the monitoring triggers' pure parts (hypothesis), and the shadow experiment's routing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.experiments import ExperimentState, ExperimentStore
from kawa.evaluation.ope import paired_difference
from kawa.evaluation.serving import plan
from kawa.evaluation.spec import Arm, ExperimentSpec
from kawa.evaluation.status import experiment_status
from kawa.events.ref import EventRef
from kawa.events.schemas import Prediction
from kawa.functions import App
from kawa.log import open_log
from kawa.monitor.join import Advance, Matured
from kawa.monitor.records import DecisionRecord
from kawa.retrain import decide as d
from kawa.retrain.shadow import ShadowTally, reward
from kawa.retrain.triggers import PerformanceTriggers, drop_of
from kawa.testing import cloud_event, invoke

NAME, HASH, VERSION = "fraud-shadow-v7", "h" * 64, 7


def decision(event: int, unit: int, arm: str, score: float, *, version: int | None = None,
             experiment: str = NAME, spec_hash: str = HASH) -> DecisionRecord:  # fmt: skip
    v = version if version is not None else (VERSION if arm == "candidate" else 3)
    return DecisionRecord(EventRef("/payments", f"tx-{event}"), "fraud", v, f"card-{unit}", 1000.0 + event,
                          score=score, arm=arm, propensity=1.0, experiment=experiment, spec_hash=spec_hash,
                          acting=arm == "champion")  # fmt: skip


def matured(event: int, unit: int, arm: str, score: float, label: int, **kw: Any) -> Matured:
    return Matured(decision(event, unit, arm, score, **kw), label, None, True, 1010.0 + event)


def prediction(event: int, score: float, *, version: int = VERSION, acting: bool = False,
               experiment: str = NAME) -> Prediction:  # fmt: skip
    return Prediction(model="fraud", version=version, event=EventRef("/payments", f"tx-{event}"), input_shape=[1, 3],
                      output=[[score]], latency_ms=1.0, time_ms=1_000_000 + event, experiment=experiment,
                      arm="candidate", propensity=1.0, unit="ignored", acting=acting, spec_hash=HASH)  # fmt: skip


# one event: its unit, its label, the champion's and the candidate's scores, and how the candidate's score is
# recorded (a prediction record, a decision record, both, none) plus records that must not count
event_st = st.tuples(st.integers(0, 6), st.integers(0, 1), st.floats(0, 1), st.floats(0, 1),
                     st.sampled_from(["prediction", "decision", "both", "none"]), st.booleans(),
                     st.sampled_from(["", "old-version", "other-experiment", "acting-prediction"]))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(event_st, max_size=40), st.randoms())
def test_the_tally_pairs_each_event_once_whatever_the_order_and_redeliveries(events: list[Any], rnd: Any) -> None:
    records: list[Matured | Prediction] = []
    truth: dict[str, list[tuple[float, float]]] = {}
    for i, (unit, label, champ, cand, how, champion_matured, noise) in enumerate(events):
        if champion_matured:
            records.append(matured(i, unit, "champion", champ, label))
        if how in ("prediction", "both"):
            records.append(prediction(i, cand))
        if how in ("decision", "both"):
            records.append(matured(i, unit, "candidate", cand, label))
        if noise == "old-version":
            records.append(prediction(i, 1 - cand, version=VERSION - 1))
        elif noise == "other-experiment":
            records.append(matured(i, unit, "candidate", 1 - cand, label, experiment="fraud-canary-v7"))
        elif noise == "acting-prediction":
            records.append(prediction(i, 1 - cand, acting=True))
        if champion_matured and how != "none":
            truth.setdefault(f"card-{unit}", []).append((-((cand - label) ** 2), -((champ - label) ** 2)))

    def feed(items: list[Matured | Prediction]) -> ShadowTally:
        tally = ShadowTally(NAME, HASH, VERSION)
        for item in items:
            if isinstance(item, Prediction):
                tally.add_prediction(item)
            else:
                tally.add(Advance(0.0, (item,)))
        return tally

    in_order = feed(records)
    shuffled = [*records, *(r for r in records if rnd.random() < 0.3)]  # some redelivered
    rnd.shuffle(shuffled)
    other = feed(shuffled)
    expected = sorted((round(sum(c for c, _ in v) / len(v), 9), round(sum(b for _, b in v) / len(v), 9))
                      for v in truth.values())  # fmt: skip
    for tally in (in_order, other):
        assert tally.units == len(truth) and tally.pairs == sum(len(v) for v in truth.values())
        candidate, champion = tally.rewards()
        assert sorted((round(c, 9), round(b, 9)) for c, b in zip(candidate, champion, strict=True)) == expected
    if in_order.units >= 2:
        est = in_order.estimate()
        assert est.lower <= est.estimate <= est.upper and est.n == in_order.units


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 0), st.floats(-1, 0)), min_size=2, max_size=50))
def test_the_paired_estimate_is_antisymmetric_and_zero_between_equal_models(pairs: list[tuple[float, float]]) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    forward, backward = paired_difference(a, b), paired_difference(b, a)
    assert math.isclose(forward.estimate, -backward.estimate, abs_tol=1e-12)
    assert math.isclose(forward.lower, -backward.upper, abs_tol=1e-9)
    same = paired_difference(a, a)
    assert same.estimate == 0 and same.lower == 0 == same.upper


def test_rewards_and_refusals() -> None:
    assert reward(0.8, 1) == pytest.approx(-0.04) and reward(None, 1) is None and reward(0.5, None) is None
    with pytest.raises(EvaluationError, match="at least two"):
        paired_difference([0.0], [0.0])
    better = ShadowTally(NAME, HASH, VERSION)  # the candidate is closer to every label than the champion
    for i in range(100):
        better.add_prediction(prediction(i, 0.9 if i % 2 else 0.1))
        better.add_matured([matured(i, i, "champion", 0.5, i % 2)])
    assert better.units == 100 and better.estimate(50).n == 50 and better.estimate().lower > 0


def perf(version: int, start: float, n: int, auroc: tuple[float, float, float], arm: str | None = None,
         model: str = "fraud") -> dict[str, Any]:  # fmt: skip
    est, low, high = auroc
    return {"model": model, "version": version, "cohort": {"start": start, "end": start + 60, "arm": arm}, "n": n,
            "metrics": {"auroc": {"estimate": est, "low": low, "high": high, "level": 0.95}}}


cohort_st = st.tuples(st.integers(1, 2), st.integers(0, 5), st.sampled_from([None, "champion", "candidate"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(cohort_st, st.integers(1, 50)), max_size=40))
def test_outcomes_count_every_matured_serving_decision_once(updates: list[Any]) -> None:
    """However a cohort's growth is split into performance events, and whichever are redelivered, the Outcomes
    counts sum to the final size of the serving cohorts."""
    tracker, sizes, total = PerformanceTriggers("fraud", drops=False), {}, 0
    for i, ((version, start, arm), grow) in enumerate(updates):
        key = (version, start, arm)
        sizes[key] = sizes.get(key, 0) + grow
        data = perf(version, float(start), sizes[key], (0.8, 0.75, 0.85), arm)
        for event in tracker.on_event(f"p{i}", float(i), data) + tracker.on_event(f"p{i}", float(i), data):
            assert isinstance(event, d.Outcomes) and event.count > 0
            total += event.count
    assert total == sum(n for (_, _, arm), n in sizes.items() if arm != "candidate")
    assert tracker.on_event("x", 0.0, perf(1, 0.0, 10**6, (0.8, 0.7, 0.9), model="other")) == []


@settings(max_examples=200, deadline=None)
@given(st.floats(0.5, 0.95), st.floats(0.5, 0.95), st.floats(0.005, 0.1), st.floats(0.005, 0.1))
def test_a_drop_is_the_reference_minus_the_current_with_an_honest_lower_end(
    ref: float, cur: float, hw_ref: float, hw_cur: float
) -> None:
    tracker = PerformanceTriggers("fraud")
    assert [type(e) for e in tracker.on_event("a", 1.0, perf(1, 0.0, 100, (ref, ref - hw_ref, ref + hw_ref)))] == [
        d.Outcomes]  # the first cohort of a version is its reference
    events = tracker.on_event("b", 2.0, perf(1, 60.0, 100, (cur, cur - hw_cur, cur + hw_cur)))
    drops = [e for e in events if isinstance(e, d.PerformanceDrop)]
    if ref - cur <= 0:
        assert drops == []  # a rise is not a drop
        return
    (drop,) = drops
    assert drop.drop == pytest.approx(ref - cur) and drop.lower < drop.drop
    assert drop.lower == pytest.approx(ref - cur - math.hypot(hw_ref, hw_cur), rel=1e-6)
    # a new version has its own reference: no drop against the old version's
    assert not [e for e in tracker.on_event("c", 3.0, perf(2, 120.0, 50, (0.5, 0.4, 0.6)))
                if isinstance(e, d.PerformanceDrop)]  # fmt: skip
    assert drop_of({"estimate": 0.8}, {"estimate": 0.7, "low": 0.6, "high": 0.8}) is None


def test_the_shadow_experiment_gives_every_unit_the_champion_and_scores_the_candidate(tmp_path: Path) -> None:
    log = open_log(f"embedded:{tmp_path / 'log'}")
    try:
        spec = ExperimentSpec(name=NAME, model="fraud", unit="card", salt=NAME, horizon=100, primary_metric="caught",
                              maturity_window_s=10.0,
                              arms=(Arm("champion", 0.5, model="fraud@champion"),
                                    Arm("candidate", 0.5, model="fraud@candidate")))  # fmt: skip
        store = ExperimentStore(log)
        with pytest.raises(EvaluationError, match="not one of its arms"):
            store.create(spec, acting="nobody")
        store.create(spec, acting="champion")
        state = ExperimentStore(log).get(NAME)  # read back from the log
        assert state.shadow and state.acting == "champion"
        for i in range(200):
            route = plan(state, "fraud@champion", f"card-{i}")
            assert route.ref == "fraud@champion" and route.allocation.arm == "champion"
            assert route.allocation.acting and route.allocation.propensity == 1.0
            ((ref, shadow),) = route.shadows
            assert ref == "fraud@candidate" and shadow.arm == "candidate" and not shadow.acting
        decisions = [DecisionRecord(EventRef("/p", f"tx-{i}"), "fraud", 3 if arm == "champion" else 7, f"card-{i}",
                                    1000.0 + i, score=0.5, arm=arm, propensity=1.0, experiment=NAME,
                                    spec_hash=spec.spec_hash(), acting=arm == "champion")
                     for i in range(200) for arm in ("champion", "candidate")]  # fmt: skip
        status = experiment_status(state, [], decisions)  # every unit on the champion is no broken split
        assert not status.sample_ratio_mismatch and [a.units for a in status.arms] == [200, 0]
        assert "scored in shadow only" in status.notes[0]
    finally:
        log.close()


shadow_app = App("payments")


@shadow_app.function(topic="payments", name="fraud-score")
def fraud_score(event: Any, ctx: Any) -> Any:
    """An app that takes part in the loop without knowing it: it asks for the champion and the card."""
    model = ctx.model("fraud@champion", unit=event.get_data()["card"])
    score = float(model.predict(np.zeros((1, 3)))[0])
    return ctx.new_event("dev.kawa.fraud-score", {"score": score, "blocked": bool(model.acts) and score > 0.5})


def test_an_app_under_the_shadow_experiment_acts_on_the_champion_and_records_the_candidate() -> None:
    spec = ExperimentSpec(name=NAME, model="fraud", unit="card", salt=NAME, horizon=100, primary_metric="caught",
                          maturity_window_s=10.0, arms=(Arm("champion", 0.5, model="fraud@champion"),
                                                        Arm("candidate", 0.5, model="fraud@candidate")))  # fmt: skip
    state = ExperimentState(spec, "running", 0, shadow=True, acting="champion")
    models = {"fraud@champion": lambda x: [0.25], "fraud@candidate": lambda x: [0.95]}
    for n in range(50):
        out = invoke(fraud_score, cloud_event("dev.kawa.payment", {"card": f"card-{n}"}), models=models,
                     experiments=[state])  # fmt: skip
        assert out.outcome == "ok", out.reason
        assert out.replies[0].get_data() == {"score": 0.25, "blocked": False}  # the candidate's 0.95 never acts
        allocations = {p.allocation.arm: p.allocation for p in out.predictions if p.allocation is not None}
        assert allocations["champion"].acting and allocations["champion"].propensity == 1.0
        assert not allocations["candidate"].acting and allocations["candidate"].experiment == NAME
