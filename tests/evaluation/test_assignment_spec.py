"""Assignment is sticky, uniform and independent across salts; specs validate and hash stably."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import kawa.evaluation
from kawa.evaluation import Arm, Assigner, ExperimentSpec, Guardrail, assign, shadow, unit_uniform
from kawa.evaluation.errors import EvaluationError, InvalidExperimentSpec

WEIGHTS = [("champion", 0.1), ("challenger", 0.2), ("rule", 0.3), ("holdout", 0.4)]


def _spec(**changes: object) -> ExperimentSpec:
    base = ExperimentSpec(
        name="sepsis-v2", model="sepsis",
        arms=(Arm("champion", 0.45, model="sepsis@champion"), Arm("challenger", 0.45, model="sepsis@challenger"),
              Arm("holdout", 0.10, policy="no-alert", holdout=True)),
        unit="patient_id", salt="s1", primary_metric="sepsis_48h", maturity_window_s=48 * 3600.0,
        metric_kind="proportion", higher_is_better=False,
        guardrails=(Guardrail("latency_p99_ms", 250.0), Guardrail("alert_rate", 0.3)), horizon=20000)
    return dataclasses.replace(base, **changes) if changes else base


@given(st.text(min_size=0, max_size=40), st.text(min_size=0, max_size=20))
def test_assignment_is_sticky_and_its_propensity_is_the_arm_weight(unit: str, salt: str) -> None:
    first = assign(unit, salt, WEIGHTS)
    assert assign(unit, salt, WEIGHTS) == first == Assigner(salt, WEIGHTS).assign(unit)
    assert first.propensity == dict(WEIGHTS)[first.arm]
    assert 0.0 <= unit_uniform(unit, salt) < 1.0


@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=8), st.text(max_size=10), st.text(max_size=10))
def test_any_valid_weights_give_an_arm_of_the_experiment(raw: list[float], unit: str, salt: str) -> None:
    total = sum(raw)
    arms = [(f"arm{i}", w / total) for i, w in enumerate(raw)]
    arms[-1] = (arms[-1][0], 1.0 - sum(w for _, w in arms[:-1]))
    if arms[-1][1] <= 0:
        return
    got = assign(unit, salt, arms)
    assert got.arm in dict(arms)


def test_assignment_is_uniform_over_units() -> None:
    units = [f"patient-{i}" for i in range(40_000)]
    u = np.array([unit_uniform(x, "salt-a") for x in units])
    assert stats.kstest(u, "uniform").pvalue > 0.001
    assigner = Assigner("salt-a", WEIGHTS)
    arms = [assigner.assign(x).arm for x in units]
    observed = [arms.count(name) for name, _ in WEIGHTS]
    expected = [w * len(units) for _, w in WEIGHTS]
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_assignment_is_independent_across_salts() -> None:
    units = [f"card-{i}" for i in range(20_000)]
    a, b = Assigner("exp-1", [("x", 0.5), ("y", 0.5)]), Assigner("exp-2", [("x", 0.5), ("y", 0.5)])
    table = np.zeros((2, 2))
    for x in units:
        table[a.assign(x).arm == "x", b.assign(x).arm == "x"] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001
    u1 = np.array([unit_uniform(x, "exp-1") for x in units])
    u2 = np.array([unit_uniform(x, "exp-2") for x in units])
    assert abs(stats.pearsonr(u1, u2).statistic) < 0.03


def test_shadow_mode_keeps_every_score_and_only_the_assigned_arm_acts() -> None:
    assigner = Assigner.for_spec(_spec())
    scores = {"champion": 0.7, "challenger": 0.9, "holdout": 0.0}
    out = shadow(assigner, "patient-7", scores)
    assert out.arm == assigner.assign("patient-7").arm
    assert out.acting_score == scores[out.arm] and dict(out.scores) == scores
    assert dict(out.propensities) == {"champion": 0.45, "challenger": 0.45, "holdout": 0.10}
    with pytest.raises(EvaluationError, match="missing challenger"):
        shadow(assigner, "patient-7", {"champion": 0.7, "holdout": 0.0})


def test_spec_hash_is_stable_and_changes_with_any_field() -> None:
    spec = _spec()
    again = ExperimentSpec.from_dict(spec.to_dict())
    assert again == spec and again.spec_hash() == spec.spec_hash()
    assert len(spec.spec_hash()) == 64
    for change in ({"alpha": 0.01}, {"salt": "s2"}, {"horizon": 20001}, {"maturity_window_s": 3600.0},
                   {"guardrails": ()}):
        assert _spec(**change).spec_hash() != spec.spec_hash()
    assert spec.control == "champion" and spec.challengers == ("challenger", "holdout")


@pytest.mark.parametrize(("change", "message"), [
    ({"arms": (Arm("a", 0.5, model="m@a"), Arm("b", 0.4, model="m@b"))}, "sum to 0.9; make them sum to 1"),
    ({"arms": (Arm("a", 1.0, model="m@a"),)}, "at least two arms"),
    ({"arms": (Arm("a", 0.5, model="m@a"), Arm("a", 0.5, model="m@b"))}, "distinct"),
    ({"arms": (Arm("a", 1.0, model="m@a"), Arm("b", 0.0, model="m@b"))}, "weights must be positive"),
    ({"arms": (Arm("a", 0.5, model="m@a"), Arm("b", 0.5))}, "needs a model reference"),
    ({"alpha": 1.5}, "alpha must be between 0 and 1"),
    ({"control": "nobody"}, "control 'nobody' is not one of the arms"),
    ({"horizon": None}, "give a planned horizon"),
    ({"min_sample": 10, "max_sample": 5}, "min_sample \\(10\\) exceeds max_sample"),
    ({"salt": ""}, "salt must be a non-empty string"),
    ({"arms": (Arm("a", "half", model="m@a"), Arm("b", 0.5, model="m@b"))}, "has weight half"),  # type: ignore[arg-type]
    ({"guardrails": (Guardrail("x", "high"),)}, "needs a finite limit"),  # type: ignore[arg-type]
    ({"guardrails": (Guardrail("x", 1.0), Guardrail("x", 2.0))}, "each guardrail metric may appear once"),
])
def test_invalid_specs_are_refused_with_what_to_do(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidExperimentSpec, match=message):
        _spec(**change)


def test_lists_from_yaml_or_json_give_the_same_spec() -> None:
    spec = _spec()
    assert dataclasses.replace(spec, arms=list(spec.arms), guardrails=list(spec.guardrails)) == spec  # type: ignore[arg-type]


def test_unknown_fields_in_a_stored_spec_are_refused() -> None:
    with pytest.raises(InvalidExperimentSpec, match="unknown fields \\['colour'\\]"):
        ExperimentSpec.from_dict({**_spec().to_dict(), "colour": "red"})


def test_the_request_path_import_does_not_load_numpy_or_scipy() -> None:
    code = ("import sys, kawa.evaluation\n"
            "from kawa.evaluation import Assigner\n"
            "Assigner('s', [('a', 0.5), ('b', 0.5)]).assign('u')\n"
            "print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(Path(kawa.evaluation.__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=True)
    assert done.stdout.strip() == "[]"
