"""An experiment's units and their matured outcomes, per arm: what each look of the evaluator is computed from.

Pure and I/O-free. :meth:`Cohorts.add_decision` sees every decision record (it is the outcome joiner's
``accept`` filter: it keeps the experiment's own assigned decisions); :meth:`Cohorts.add_failure` every failure
record (its ``on_failure``: the error-rate guardrail); :meth:`Cohorts.add_advance` takes the joiner's matured
decisions. :meth:`Cohorts.look_data` turns them into the :class:`~kawa.evaluation.decision.
LookData` of one look.

The analysis unit is the randomisation unit (a patient, a card): a unit's metric aggregates its matured
decisions — for a proportion the largest label (did the outcome happen for this unit at all), for a mean the
average value — so a unit decided on many times counts once, as the randomisation did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kawa.evaluation.decision import ArmStats, LookData

if TYPE_CHECKING:
    from kawa.evaluation.spec import ExperimentSpec
    from kawa.monitor.failures import FailureRecord
    from kawa.monitor.join import Advance
    from kawa.monitor.records import DecisionRecord

__all__ = ["Cohorts"]


@dataclass
class _Unit:
    total: float = 0.0
    count: int = 0
    peak: float = -math.inf


@dataclass
class Cohorts:
    """The experiment ``spec``'s assigned units per arm and their matured outcomes (mutable; only its methods
    change it). ``foreign`` counts decisions that name the experiment under another spec hash."""

    spec: ExperimentSpec
    assigned: dict[str, set[str]] = field(default_factory=dict)
    matured: dict[str, dict[str, _Unit]] = field(default_factory=dict)
    versions: dict[str, set[int]] = field(default_factory=dict)
    actions: dict[str, dict[str, int]] = field(default_factory=dict)  # arm -> action -> decisions
    scores: dict[str, list[float]] = field(default_factory=dict)  # arm -> [sum, count]
    latencies: dict[str, list[float]] = field(default_factory=dict)  # arm -> decision latencies (ms)
    failed: dict[str, set[str]] = field(default_factory=dict)  # arm -> events that failed and were not decided
    foreign: int = 0
    first_decision: float = math.inf
    watermark: float = -math.inf

    def __post_init__(self) -> None:
        self._hash = self.spec.spec_hash()
        self._holdouts = {a.name for a in self.spec.arms if a.holdout}
        for arm in self.spec.arm_names:
            self.assigned.setdefault(arm, set())
            self.matured.setdefault(arm, {})
            self.versions.setdefault(arm, set())
            self.actions.setdefault(arm, {})
            self.scores.setdefault(arm, [0.0, 0.0])
            self.latencies.setdefault(arm, [])
            self.failed.setdefault(arm, set())

    def add_decision(self, d: DecisionRecord) -> bool:
        """Keep ``d`` when it is the decision of a unit's *assigned* arm in this experiment (an acting arm, or a
        holdout: scored, never shown); shadow scores of the other arms and other experiments' decisions are
        not joined."""
        if d.experiment != self.spec.name:
            return False
        if d.spec_hash != self._hash or d.arm not in self.assigned:
            self.foreign += 1
            return False
        if d.acting is False and d.arm not in self._holdouts:
            return False  # a shadow score: recorded for off-policy evaluation, not an assignment
        self.failed[d.arm].discard(d.ref.key())  # a retry that decided takes the failure back
        self.assigned[d.arm].add(d.entity)
        self.versions[d.arm].add(d.version)
        counts = self.actions[d.arm]
        counts[str(d.action)] = counts.get(str(d.action), 0) + 1
        if d.score is not None:
            self.scores[d.arm][0] += d.score
            self.scores[d.arm][1] += 1
        if d.latency_ms is not None:
            self.latencies[d.arm].append(d.latency_ms)
        self.first_decision = min(self.first_decision, d.decided_at)
        return True

    def add_failure(self, f: FailureRecord) -> None:
        """Count a failed attempt of an event this experiment's arm was serving (the outcome joiner's
        ``on_failure``): the event counts as an error of the arm until a decision for it arrives."""
        if f.experiment != self.spec.name or f.spec_hash != self._hash or f.arm not in self.failed:
            return
        if f.acting is False and f.arm not in self._holdouts:
            return  # an arm scored in shadow did not serve the event
        self.failed[f.arm].add(f.ref.key())

    def add_advance(self, step: Advance) -> None:
        self.watermark = max(self.watermark, step.watermark)
        for m in step.matured:
            arm = m.decision.arm
            if arm is None or arm not in self.matured:
                continue
            value = float(m.value if m.value is not None else (m.label or 0))
            unit = self.matured[arm].setdefault(m.decision.entity, _Unit())
            unit.total += value
            unit.count += 1
            unit.peak = max(unit.peak, value)

    def arm_stats(self, arm: str) -> ArmStats:
        units = self.matured[arm].values()
        if self.spec.metric_kind == "proportion":
            values = [u.peak for u in units]
        else:
            values = [u.total / u.count for u in units]
        n = len(values)
        if n == 0:
            return ArmStats(0, 0.0, 0.0)
        mean = math.fsum(values) / n
        variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return ArmStats(n, mean, variance)

    def guardrail(self, metric: str, arm: str) -> float | None:
        """A guardrail metric of ``arm`` from its decision records, or None when there is none to compute it from:
        ``action_rate:<action>`` (share of the arm's decisions with that action, e.g. ``action_rate:alert``),
        ``score_mean``, and ``latency_p99_ms`` / ``latency_p50_ms`` (nearest rank over the decisions' ``latency_ms``,
        the handler's time to its decision), and ``error_rate``: the arm's failed events (failure records, a
        retry that decided taking its failure back) over its decisions plus those failures. Others are not
        measured here: :meth:`unmeasured`."""
        if metric == "error_rate":
            failures, decisions = len(self.failed[arm]), sum(self.actions[arm].values())
            return failures / (failures + decisions) if failures + decisions else None
        if metric.startswith("action_rate:"):
            counts = self.actions[arm]
            decisions = sum(counts.values())
            return counts.get(metric.split(":", 1)[1], 0) / decisions if decisions else None
        if metric == "score_mean":
            score_sum, n = self.scores[arm]
            return score_sum / n if n else None
        if metric in ("latency_p99_ms", "latency_p50_ms"):
            values = sorted(self.latencies[arm])
            if not values:
                return None
            q = 0.99 if metric == "latency_p99_ms" else 0.5
            return values[max(0, min(len(values) - 1, math.ceil(q * len(values)) - 1))]  # nearest rank
        return None

    def unmeasured(self) -> tuple[str, ...]:
        """The spec's guardrails with no value for any arm: a metric the records cannot give, or one whose data
        they lack (no ``latency_ms``, no decision or failure yet). A look names them; they are never passed silently."""
        return tuple(g.metric for g in self.spec.guardrails
                     if all(self.guardrail(g.metric, a) is None for a in self.spec.arm_names))  # fmt: skip

    def look_data(self) -> LookData:
        """The data of a look now: matured-metric stats and assigned units per arm, the guardrails it can measure,
        and the window from the first decision to the join's watermark."""
        arms = {a: self.arm_stats(a) for a in self.spec.arm_names}
        assigned = {a: max(len(self.assigned[a]), arms[a].n) for a in self.spec.arm_names}
        start = self.first_decision if math.isfinite(self.first_decision) else 0.0
        end = self.watermark if math.isfinite(self.watermark) else start
        guardrails: dict[str, dict[str, float]] = {}
        for g in self.spec.guardrails:
            values = {a: v for a in self.spec.arm_names if (v := self.guardrail(g.metric, a)) is not None}
            if values:
                guardrails[g.metric] = values
        return LookData(arms=arms, assigned=assigned, guardrails=guardrails, window=(start, max(start, end)))

    @property
    def units(self) -> int:
        return sum(len(s) for s in self.assigned.values())
