"""The pure decision rule: ``look(state, spec, data) -> (state, Look, Decision | None)``, and decision records.

At each look, in this order:

1. **SRM** — the always-valid SRM p-value over *all* assigned units ≤ ``srm_alpha``: stop, nothing is trusted.
2. **Guardrail breach** — a non-control arm's guardrail value crosses its limit: stop that experiment.
3. Below ``min_sample`` matured units: continue.
4. **Efficacy** — a challenger's always-valid interval (at alpha / #challengers, Bonferroni) lies wholly on the
   better side of 0: stop for efficacy, that challenger wins. Wholly on the worse side: stop for futility (harm).
5. ``max_sample`` reached without a winner: stop for futility.
6. Otherwise continue.

Everything is frozen data; :class:`DecisionRecord` is JSON-serialisable and :func:`recompute` replays the looks
from the data and reproduces the decision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from kawa.evaluation.errors import EvaluationError, RecordMismatch
from kawa.evaluation.sequential import mean_difference, planned_mixing_variance
from kawa.evaluation.spec import ExperimentSpec
from kawa.evaluation.srm import srm_p_value

RULE_VERSION = "kawa.evaluation.decision/1"

DecisionKind = Literal["continue", "stop-efficacy", "stop-futility", "guardrail-breach", "srm"]


@dataclass(frozen=True)
class ArmStats:
    """The primary metric over an arm's *matured* units: count, mean and sample variance (ddof=1).

    For a proportion metric, ``mean`` is the event rate and ``variance`` may be left at 0: it is p(1-p).
    """

    n: int
    mean: float
    variance: float = 0.0


@dataclass(frozen=True)
class LookData:
    """What one look sees: per-arm primary metric stats, per-arm assignment counts (all assigned units, matured
    or not — the SRM input), per-guardrail per-arm values, and the data window ``[start, end]`` (epoch s)."""

    arms: Mapping[str, ArmStats]
    assigned: Mapping[str, int]
    guardrails: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"arms": {k: asdict(v) for k, v in self.arms.items()}, "assigned": dict(self.assigned),
                "guardrails": {k: dict(v) for k, v in self.guardrails.items()}, "window": list(self.window)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LookData:
        try:
            window = tuple(float(t) for t in d.get("window", (0.0, 0.0)))
            return cls({k: ArmStats(**v) for k, v in d["arms"].items()}, dict(d["assigned"]),
                       {k: dict(v) for k, v in d.get("guardrails", {}).items()}, (window[0], window[1]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise EvaluationError("look data must have 'arms' ({arm: {n, mean, variance}}), 'assigned' "
                                  "({arm: count}), and optionally 'guardrails' and 'window' [start, end]") from exc


@dataclass(frozen=True)
class Comparison:
    """One challenger against the control at one look; ``p_value`` is the always-valid (running-minimum) one."""

    arm: str
    estimate: float
    lower: float
    upper: float
    e_value: float
    p_value: float


@dataclass(frozen=True)
class Look:
    index: int
    window: tuple[float, float]
    n: Mapping[str, int]
    comparisons: tuple[Comparison, ...]
    srm_p_value: float
    guardrails: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    look: int
    arm: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class EvalState:
    """What carries between looks: the looks so far, running minima of the always-valid p-values, and the
    decision once one is made (after which :func:`look` refuses more looks)."""

    looks: tuple[Look, ...] = ()
    min_p: Mapping[str, float] = field(default_factory=dict)
    srm_min_p: float = 1.0
    decision: Decision | None = None


def mixing_variance(spec: ExperimentSpec) -> float:
    """rho² for the spec: given, or optimised for the planned horizon (else max_sample), at the per-test alpha."""
    if spec.mixing_variance is not None:
        return spec.mixing_variance
    horizon = spec.horizon if spec.horizon is not None else spec.max_sample
    assert horizon is not None  # the spec's validation guarantees one of the three
    return planned_mixing_variance(spec.alpha / len(spec.challengers), horizon)


def look(state: EvalState, spec: ExperimentSpec, data: LookData) -> tuple[EvalState, Look, Decision | None]:
    """Take one look. Returns the new state, the look, and a decision (``None`` means continue)."""
    if state.decision is not None:
        raise EvaluationError(f"experiment {spec.name!r} was already decided ({state.decision.kind}) at look "
                              f"{state.decision.look}; start a new experiment to keep testing")
    _check_data(spec, data)
    index = len(state.looks)
    alpha = spec.alpha / len(spec.challengers)
    rho2 = mixing_variance(spec)
    control = _stats(spec, data.arms[spec.control])
    comparisons, min_p = [], dict(state.min_p)
    for arm in spec.challengers:
        n_a, m_a, v_a = control
        n_b, m_b, v_b = _stats(spec, data.arms[arm])
        iv = mean_difference(n_a, m_a, v_a, n_b, m_b, v_b, alpha=alpha, rho2=rho2)
        min_p[arm] = min(min_p.get(arm, 1.0), iv.p_value)
        comparisons.append(Comparison(arm, iv.estimate, iv.lower, iv.upper, iv.e_value, min_p[arm]))
    srm = min(state.srm_min_p, srm_p_value([data.assigned[a] for a in spec.arm_names], spec.weights))
    the_look = Look(index, data.window, {a: data.arms[a].n for a in spec.arm_names}, tuple(comparisons), srm,
                    {k: dict(v) for k, v in data.guardrails.items()})
    decision = _decide(spec, index, data, tuple(comparisons), srm)
    new_state = EvalState((*state.looks, the_look), min_p, srm, decision)
    return new_state, the_look, decision


def _stats(spec: ExperimentSpec, s: ArmStats) -> tuple[int, float, float]:
    if spec.metric_kind == "proportion":
        return s.n, s.mean, s.mean * (1.0 - s.mean)
    return s.n, s.mean, s.variance


def _check_data(spec: ExperimentSpec, data: LookData) -> None:
    for label, mapping in (("metric stats", data.arms), ("assignment counts", data.assigned)):
        missing = [a for a in spec.arm_names if a not in mapping]
        if missing:
            raise EvaluationError(f"look data for experiment {spec.name!r} lacks {label} for arm(s) "
                                  f"{', '.join(missing)}; give every arm, with zeros where it has no units")
    for a in spec.arm_names:
        s = data.arms[a]
        if s.n < 0 or not math.isfinite(s.mean) or s.variance < 0 or data.assigned[a] < 0:
            raise EvaluationError(f"look data for arm {a!r} has a negative count, a negative variance or a "
                                  "non-finite mean")
        if s.n > data.assigned[a]:
            raise EvaluationError(f"arm {a!r} has {s.n} matured units but only {data.assigned[a]} assigned; "
                                  "matured units are a subset of the assigned ones")


def _decide(spec: ExperimentSpec, index: int, data: LookData, comparisons: tuple[Comparison, ...],
            srm: float) -> Decision | None:
    if srm <= spec.srm_alpha:
        return Decision("srm", index, None, f"sample ratio mismatch: always-valid p = {srm:.3g} <= "
                        f"{spec.srm_alpha:g}; the split differs from the planned weights, so fix the assignment "
                        "or logging before trusting any estimate")
    for g in spec.guardrails:
        values = data.guardrails.get(g.metric, {})
        for arm in spec.challengers:
            if arm in values and g.breached(values[arm]):
                side = "above" if g.direction == "max" else "below"
                return Decision("guardrail-breach", index, arm, f"arm {arm!r}: {g.metric} = {values[arm]:g} is "
                                f"{side} its limit {g.limit:g}")
    total = sum(data.arms[a].n for a in spec.arm_names)
    if spec.min_sample is not None and total < spec.min_sample:
        return None
    sign = 1.0 if spec.higher_is_better else -1.0
    better = [c for c in comparisons if (c.lower > 0 if sign > 0 else c.upper < 0)]
    if better:
        best = max(better, key=lambda c: sign * c.estimate)
        return Decision("stop-efficacy", index, best.arm, f"arm {best.arm!r} beats {spec.control!r}: "
                        f"{spec.primary_metric} difference {best.estimate:.4g} in [{best.lower:.4g}, "
                        f"{best.upper:.4g}]")
    worse = [c for c in comparisons if (c.upper < 0 if sign > 0 else c.lower > 0)]
    if worse and len(worse) == len(comparisons):
        return Decision("stop-futility", index, None, f"every challenger is worse than {spec.control!r} on "
                        f"{spec.primary_metric}")
    if spec.max_sample is not None and total >= spec.max_sample:
        return Decision("stop-futility", index, None, f"max_sample {spec.max_sample} reached with no challenger "
                        f"shown better than {spec.control!r}")
    return None


@dataclass(frozen=True)
class DecisionRecord:
    """Everything needed to audit a decision: the spec and its hash, the data window, versions, every look and
    the rule version."""

    spec: Mapping[str, Any]
    spec_hash: str
    window: tuple[float, float]
    versions: Mapping[str, str]
    looks: tuple[Look, ...]
    decision: Decision | None
    rule_version: str = RULE_VERSION

    def to_json(self) -> str:
        return json.dumps(jsonable(asdict(self)), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DecisionRecord:
        """Parse :meth:`to_json` output; anything else is a :class:`RecordMismatch`."""
        try:
            return cls._from_dict(json.loads(text))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise RecordMismatch("this is not a Kawa decision record (expected the JSON written by "
                                 "DecisionRecord.to_json)") from exc

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> DecisionRecord:
        looks = tuple(Look(lk["index"], tuple(lk["window"]), lk["n"],
                           tuple(_comparison(c) for c in lk["comparisons"]),
                           lk["srm_p_value"], lk["guardrails"]) for lk in d["looks"])
        dec = Decision(**d["decision"]) if d["decision"] is not None else None
        return cls(d["spec"], d["spec_hash"], tuple(d["window"]), d["versions"], looks, dec, d["rule_version"])


def record(spec: ExperimentSpec, state: EvalState, versions: Mapping[str, str] | None = None) -> DecisionRecord:
    """The decision record of an experiment's state (decided or not)."""
    window = (state.looks[0].window[0], state.looks[-1].window[1]) if state.looks else (0.0, 0.0)
    return DecisionRecord(spec.to_dict(), spec.spec_hash(), window, dict(versions or {}), state.looks,
                          state.decision)


def recompute(rec: DecisionRecord, data: Sequence[LookData]) -> Decision | None:
    """Replay the looks of a record from their data and return the decision the rule makes.

    Raises :class:`RecordMismatch` when the record's spec does not hash to its ``spec_hash``, the rule version
    differs from this code's, or the number of looks differs.
    """
    if rec.rule_version != RULE_VERSION:
        raise RecordMismatch(f"the record was made by rule {rec.rule_version!r}; this code is {RULE_VERSION!r}")
    spec = ExperimentSpec.from_dict(rec.spec)
    if spec.spec_hash() != rec.spec_hash:
        raise RecordMismatch("the record's spec does not match its spec_hash; the record was altered")
    if len(data) != len(rec.looks):
        raise RecordMismatch(f"the record has {len(rec.looks)} looks but {len(data)} were given; give the data "
                             "of every look")
    state, decision = EvalState(), None
    for d in data:
        state, _, decision = look(state, spec, d)
    return decision


def _comparison(c: Mapping[str, Any]) -> Comparison:
    return Comparison(**{k: v if k == "arm" else _num(v) for k, v in c.items()})


def _num(v: Any) -> Any:
    return {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}.get(v, v) if isinstance(v, str) else v


def jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj
