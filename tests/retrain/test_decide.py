"""The loop's pure rules, property-tested over arbitrary event sequences (hypothesis), plus the happy paths."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.retrain.decide import (
    Alert,
    Approval,
    Evaluated,
    LoopState,
    OpeEstimate,
    Outcomes,
    PerformanceDrop,
    Promote,
    Reject,
    RequestApproval,
    Rollback,
    ShadowProgress,
    StartCanary,
    StartShadow,
    Tick,
    Train,
    TrainingDone,
    canary_name,
    decide,
)
from kawa.retrain.policy import Canary, Gates, InvalidPolicy, Limits, LoopPolicy, Training, Triggers

COOLDOWN = 100.0


def policy(**gates: Any) -> LoopPolicy:
    return LoopPolicy(
        model="fraud", training=Training("kawa.apps.fraud.train:train", window_s=3600),
        triggers=Triggers(alerts=("drift",), performance_drop=0.05, schedule_s=1000, new_outcomes=50),
        limits=Limits(cooldown_s=COOLDOWN, min_outcomes=0), gates=Gates(**gates),
    )  # fmt: skip


def run(p: LoopPolicy, events: list[Any]) -> tuple[LoopState, list[tuple[Any, Any]]]:
    state, log = LoopState(), []
    for e in events:
        state, actions = decide(p, state, e)
        log.extend((e, a) for a in actions)
    return state, log


def test_the_happy_path_trains_shadows_canaries_and_promotes() -> None:
    p = policy(shadow_outcomes=10, ope_margin=0.01, canary=Canary(share=0.2))
    events = [
        Alert("a1", 10.0, kind="drift"),
        TrainingDone("t1", 20.0, job="fraud-retrain-1", version=7, candidate_metric=0.81, champion_metric=0.78),
        ShadowProgress("s1", 30.0, version=7, matured=10),
        OpeEstimate("o1", 31.0, version=7, lower=0.002),
        Evaluated("e1", 40.0, experiment=canary_name("fraud", 7), kind="continue"),
        Evaluated("e2", 50.0, experiment=canary_name("fraud", 7), kind="stop-efficacy", arm="candidate",
                  record_ok=True),
    ]  # fmt: skip
    state, log = run(p, events)
    assert [type(a) for _, a in log] == [Train, StartShadow, StartCanary, Promote]
    assert log[-1][1] == Promote(7, "won its canary fraud-canary-v7", "fraud-canary-v7")
    assert state.phase == "idle" and state.champion == 7 and state.candidate is None


def test_gates_reject_and_roll_back() -> None:
    p = policy(canary=Canary(share=0.2))
    worse = [Alert("a", 0, kind="drift"),
             TrainingDone("t", 1, job="fraud-retrain-1", version=2, candidate_metric=0.70, champion_metric=0.78)]
    assert isinstance(run(p, worse)[1][-1][1], Reject)
    breach = [Alert("a", 0, kind="drift"),
              TrainingDone("t", 1, job="fraud-retrain-1", version=2, candidate_metric=0.8, champion_metric=0.78),
              Evaluated("e", 2, experiment="fraud-canary-v2", kind="guardrail-breach", arm="candidate")]
    assert run(p, breach)[1][-1][1] == Rollback(2, "a guardrail was breached in canary", "fraud-canary-v2")
    unverified = [*breach[:2], Evaluated("e", 2, experiment="fraud-canary-v2", kind="stop-efficacy",
                                         arm="candidate", record_ok=False)]  # fmt: skip
    assert isinstance(run(p, unverified)[1][-1][1], Rollback)
    failed = [Alert("a", 0, kind="drift"), TrainingDone("t", 1, job="fraud-retrain-1", error="out of memory")]
    assert "out of memory" in run(p, failed)[1][-1][1].reason  # type: ignore[union-attr]


def test_approval_and_refused_triggers() -> None:
    p = policy(canary=None, approval=True)
    events = [Alert("a", 0, kind="drift"), Alert("b", 5, kind="drift"),
              TrainingDone("t", 6, job="fraud-retrain-1", version=3, candidate_metric=0.9, champion_metric=0.8),
              Approval("x", 7, version=3, approved=True, by="ana"), Alert("c", 50, kind="drift"),
              Alert("d", 150, kind="other"), PerformanceDrop("p", 160, drop=0.1, lower=-0.01),
              PerformanceDrop("q", 170, drop=0.1, lower=0.02)]  # fmt: skip
    _, log = run(p, events)
    kinds = [(type(a).__name__, getattr(a, "reason", "")) for _, a in log]
    assert kinds[0][0] == "Train" and kinds[1][0] == "Skip" and "in flight" in kinds[1][1]
    assert kinds[2][0] == "RequestApproval" and kinds[3] == ("Promote", "approved by ana")
    assert kinds[4][0] == "Skip" and "cooldown" in kinds[4][1]
    assert kinds[5][0] == "Train" and len(kinds) == 6  # an unlisted alert and an insignificant drop do nothing


def test_policies_validate_and_load_from_yaml_shapes() -> None:
    loaded = LoopPolicy.from_dict({
        "model": "fraud", "training": {"entrypoint": "m:f", "window_s": 60},
        "triggers": {"alerts": ["drift"]}, "limits": {"cooldown_s": 10},
        "gates": {"shadow_outcomes": 5, "canary": {"share": 0.3, "guardrails": [{"metric": "latency_p99_ms",
                                                                              "limit": 10}]}},
    })  # fmt: skip
    assert loaded.gates.canary is not None and loaded.gates.canary.share == 0.3 and loaded.triggers.alerts == ("drift",)
    for bad, message in [
        ({"model": "m", "training": {"entrypoint": "m:f"}}, "at least one trigger"),
        ({"model": "m", "training": {"entrypoint": "nope"}, "triggers": {"alerts": ["drift"]}}, "module:function"),
        ({"model": "m", "training": {"entrypoint": "m:f"}, "triggers": {"alert": ["drift"]}}, "unknown field"),
        ({"model": "m", "training": {"entrypoint": "m:f"}, "triggers": {"alerts": ["d"]},
          "gates": {"canary": {"share": 1.5}}}, "share"),
        ({"training": {"entrypoint": "m:f"}}, "needs 'model'"),
    ]:
        with pytest.raises(InvalidPolicy, match=message):
            LoopPolicy.from_dict(bad)


# --- properties over arbitrary event sequences ---------------------------------------------------------

KINDS = ["continue", "stop-efficacy", "stop-futility", "guardrail-breach", "srm"]


@st.composite
def event_sequences(draw: Any) -> list[Any]:
    n = draw(st.integers(1, 40))
    t, events = 0.0, []
    for i in range(n):
        t += draw(st.floats(0, 60))
        kind = draw(st.sampled_from(["alert", "drop", "tick", "outcomes", "done", "ope", "shadow", "eval", "approve"]))
        version = draw(st.integers(1, 2))
        eid = f"e{draw(st.integers(0, n))}"  # ids repeat: redelivered events
        if kind == "alert":
            events.append(Alert(eid, t, kind=draw(st.sampled_from(["drift", "other"]))))
        elif kind == "drop":
            events.append(PerformanceDrop(eid, t, drop=draw(st.floats(0, 0.2)), lower=draw(st.floats(-0.1, 0.1))))
        elif kind == "tick":
            events.append(Tick(f"tick{i}", t))
        elif kind == "outcomes":
            events.append(Outcomes(eid, t, count=draw(st.integers(0, 60))))
        elif kind == "done":
            cand, champ = draw(st.floats(0, 1)), draw(st.floats(0, 1))
            events.append(TrainingDone(eid, t, job=f"fraud-retrain-{draw(st.integers(1, 2))}", version=version,
                                       candidate_metric=cand, champion_metric=champ,
                                       error=draw(st.sampled_from([None, None, "boom"]))))  # fmt: skip
        elif kind == "ope":
            events.append(OpeEstimate(eid, t, version=version, lower=draw(st.floats(-0.1, 0.1))))
        elif kind == "shadow":
            events.append(ShadowProgress(eid, t, version=version, matured=draw(st.integers(0, 30))))
        elif kind == "eval":
            events.append(Evaluated(eid, t, experiment=canary_name("fraud", version), kind=draw(st.sampled_from(KINDS)),
                                    arm=draw(st.sampled_from(["candidate", "champion", None])),
                                    record_ok=draw(st.booleans())))  # fmt: skip
        else:
            events.append(Approval(eid, t, version=version, approved=draw(st.booleans())))
    return events


GATES = [dict(shadow_outcomes=10, ope_margin=0.01, canary=Canary()), dict(canary=Canary()),
         dict(canary=None, approval=True), dict(shadow_outcomes=5, canary=Canary(), approval=True)]


@settings(max_examples=500, deadline=None)
@given(events=event_sequences(), gates=st.sampled_from(GATES))
def test_the_loops_rules_hold_whatever_happens(events: list[Any], gates: dict[str, Any]) -> None:
    p = policy(**gates)
    state = LoopState()
    trains: list[float] = []
    in_flight = 0
    done: dict[int, TrainingDone] = {}
    evaluated: dict[str, Evaluated] = {}
    for e in events:
        before = state
        state, actions = decide(p, state, e)
        if isinstance(e, TrainingDone) and e.version is not None and before.phase == "training":
            done[e.version] = e
        if isinstance(e, Evaluated):
            evaluated[e.experiment] = e
        canary = before.candidate.experiment if before.phase == "canary" and before.candidate else None
        breach = isinstance(e, Evaluated) and e.kind in ("guardrail-breach", "srm") and e.id not in before.seen
        if breach and canary is not None and e.experiment == canary:  # type: ignore[union-attr]
            assert [type(a) for a in actions] == [Rollback], "a guardrail breach in canary did not roll back"
        for a in actions:
            if isinstance(a, Train):
                trains.append(e.at)
                in_flight += 1
                assert in_flight == 1, "two candidates at once"
            if isinstance(a, Promote | Reject | Rollback):
                in_flight -= 1
            if isinstance(a, Promote):
                trained = done[a.version]
                assert trained.error is None and trained.candidate_metric is not None
                floor = (trained.champion_metric or 0) - p.gates.offline_margin
                assert trained.candidate_metric >= floor, "a candidate worse offline was promoted"
                if p.gates.canary is not None:
                    won = evaluated.get(canary_name("fraud", a.version))
                    assert won is not None and won.kind == "stop-efficacy" and won.arm == "candidate"
                    assert won.record_ok, "promoted without a decision record that recomputes"
                if p.gates.approval:
                    assert isinstance(e, Approval) and e.approved, "promoted without approval"
            if isinstance(a, RequestApproval):
                assert p.gates.approval
    assert all(b - a >= COOLDOWN for a, b in itertools.pairwise(trains)), "two trainings in a cooldown"
    assert (state.phase == "idle") == (state.candidate is None)
