"""The decision rule on simulated looks; decision records round-trip through JSON and recompute the decision."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from kawa.evaluation import Arm, ExperimentSpec, Guardrail
from kawa.evaluation.decision import (
    RULE_VERSION,
    ArmStats,
    DecisionRecord,
    EvalState,
    LookData,
    look,
    recompute,
    record,
)
from kawa.evaluation.errors import EvaluationError, RecordMismatch


def _spec(**changes: object) -> ExperimentSpec:
    base = ExperimentSpec(name="xray-v3", model="pneumonia",
                          arms=(Arm("champion", 0.5, model="pneumonia@champion"),
                                Arm("challenger", 0.5, model="pneumonia@challenger")),
                          unit="image_id", salt="x3", primary_metric="correct", maturity_window_s=3600.0,
                          guardrails=(Guardrail("latency_p99_ms", 250.0),), horizon=4000, max_sample=8000)
    return dataclasses.replace(base, **changes) if changes else base


def _looks(rng: np.random.Generator, effect: float, looks: int, batch: int,
           split: float = 0.5, latency: float = 100.0) -> list[LookData]:
    a, b = rng.normal(0, 1, looks * batch), rng.normal(effect, 1, looks * batch)
    out = []
    for k in range(1, looks + 1):
        m = k * batch
        out.append(LookData({"champion": ArmStats(m, float(a[:m].mean()), float(a[:m].var(ddof=1))),
                             "challenger": ArmStats(m, float(b[:m].mean()), float(b[:m].var(ddof=1)))},
                            {"champion": m, "challenger": round(m * split / (1 - split))},
                            {"latency_p99_ms": {"champion": 100.0, "challenger": latency}},
                            (float(k - 1), float(k))))
    return out


def _run(spec: ExperimentSpec, data: list[LookData]) -> tuple[EvalState, list[str]]:
    state, kinds = EvalState(), []
    for d in data:
        state, _, decision = look(state, spec, d)
        kinds.append("continue" if decision is None else decision.kind)
        if decision is not None:
            break
    return state, kinds


def test_a_real_improvement_stops_for_efficacy_and_names_the_winner() -> None:
    state, kinds = _run(_spec(), _looks(np.random.default_rng(1), 0.3, 40, 100))
    assert kinds[-1] == "stop-efficacy" and state.decision is not None
    assert state.decision.arm == "challenger" and len(kinds) < 40
    last = state.looks[-1].comparisons[0]
    assert last.lower > 0 and last.e_value >= 20


def test_aa_runs_to_max_sample_and_stops_for_futility() -> None:
    stops = 0
    for seed in range(20):
        _, kinds = _run(_spec(), _looks(np.random.default_rng(100 + seed), 0.0, 40, 100))
        stops += kinds[-1] == "stop-efficacy"
        assert kinds[-1] in ("stop-futility", "stop-efficacy")
    assert stops <= 3


def test_a_clearly_worse_challenger_stops_for_futility() -> None:
    state, kinds = _run(_spec(), _looks(np.random.default_rng(2), -0.4, 40, 100))
    assert kinds[-1] == "stop-futility" and state.decision is not None
    assert "worse" in state.decision.reason


def test_srm_is_a_hard_gate_before_any_effect() -> None:
    state, kinds = _run(_spec(), _looks(np.random.default_rng(3), 0.15, 40, 100, split=0.6))
    assert kinds[-1] == "srm" and state.decision is not None and state.looks[-1].srm_p_value <= 0.001
    assert "sample ratio mismatch" in state.decision.reason


def test_a_guardrail_breach_stops_the_experiment() -> None:
    state, kinds = _run(_spec(), _looks(np.random.default_rng(4), 0.0, 5, 100, latency=300.0))
    assert kinds == ["guardrail-breach"] and state.decision is not None
    assert state.decision.arm == "challenger" and "latency_p99_ms = 300" in state.decision.reason


def test_min_sample_defers_any_stop_for_efficacy() -> None:
    _, kinds = _run(_spec(min_sample=6000), _looks(np.random.default_rng(5), 1.0, 40, 100))
    assert kinds.index("stop-efficacy") == 29  # 30 looks x 200 units = 6000


def test_no_look_after_a_decision_and_incomplete_data_is_refused() -> None:
    spec, data = _spec(), _looks(np.random.default_rng(6), 0.0, 2, 100, latency=300.0)
    state, _, decision = look(EvalState(), spec, data[0])
    assert decision is not None
    with pytest.raises(EvaluationError, match="already decided"):
        look(state, spec, data[1])
    broken = LookData({"champion": ArmStats(10, 0.0, 1.0)}, {"champion": 10, "challenger": 10})
    with pytest.raises(EvaluationError, match="lacks metric stats for arm\\(s\\) challenger"):
        look(EvalState(), spec, broken)
    more = LookData({"champion": ArmStats(10, 0.0, 1.0), "challenger": ArmStats(20, 0.0, 1.0)},
                    {"champion": 10, "challenger": 10})
    with pytest.raises(EvaluationError, match="20 matured units but only 10 assigned"):
        look(EvalState(), spec, more)


def test_the_decision_record_is_json_and_recomputes_the_same_decision() -> None:
    spec = _spec()
    data = _looks(np.random.default_rng(1), 0.3, 40, 100)
    state, kinds = _run(spec, data)
    rec = record(spec, state, versions={"kawa": "0.1", "pneumonia@challenger": "7"})
    text = rec.to_json()
    json.loads(text)  # strict JSON: no NaN or Infinity tokens
    back = DecisionRecord.from_json(text)
    assert back.spec_hash == spec.spec_hash() and back.rule_version == RULE_VERSION
    assert back.decision == state.decision and len(back.looks) == len(kinds)
    assert back.looks == rec.looks
    replay = [LookData.from_dict(json.loads(json.dumps(d.to_dict()))) for d in data[:len(kinds)]]
    assert recompute(back, replay) == state.decision
    tampered = dataclasses.replace(back, spec={**back.spec, "alpha": 0.2})
    with pytest.raises(RecordMismatch, match="altered"):
        recompute(tampered, replay)
    with pytest.raises(RecordMismatch, match="rule"):
        recompute(dataclasses.replace(back, rule_version="other/9"), replay)
    with pytest.raises(RecordMismatch, match="give the data of every look"):
        recompute(back, replay[:-1])


def test_a_record_with_uninformative_looks_is_still_strict_json() -> None:
    spec = _spec()
    tiny = LookData({"champion": ArmStats(1, 0.0, 0.0), "challenger": ArmStats(1, 1.0, 0.0)},
                    {"champion": 1, "challenger": 1})
    state, lk, decision = look(EvalState(), spec, tiny)
    assert decision is None and lk.comparisons[0].lower == float("-inf")
    back = DecisionRecord.from_json(record(spec, state).to_json())
    assert back.looks[0].comparisons[0].lower == float("-inf")


def test_malformed_records_and_look_data_are_refused_in_kawas_words() -> None:
    with pytest.raises(RecordMismatch, match="not a Kawa decision record"):
        DecisionRecord.from_json('{"spec": {}}')
    with pytest.raises(RecordMismatch, match="not a Kawa decision record"):
        DecisionRecord.from_json("not json")
    with pytest.raises(EvaluationError, match="look data must have 'arms'"):
        LookData.from_dict({"assigned": {"champion": 1}})
