"""Where an experiment stands, from its decision records: units and predictions per arm, and the
sample-ratio check (an always-valid SRM test) on units.

:func:`experiment_status` is pure (decision records in, an :class:`ExperimentStatus` out);
:func:`read_status` reads the predictions topic once for the CLI, the API and the portal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.evaluation.srm import srm_p_value

if TYPE_CHECKING:
    from kawa.evaluation.experiments import ExperimentState
    from kawa.events.schemas import Prediction
    from kawa.log.base import EventLog
    from kawa.monitor.records import DecisionRecord

__all__ = ["ArmStatus", "ExperimentStatus", "experiment_status", "read_status"]


@dataclass(frozen=True)
class ArmStatus:
    arm: str
    weight: float
    units: int
    predictions: int
    shadow_predictions: int
    versions: tuple[int, ...]
    decisions: int = 0


@dataclass(frozen=True)
class ExperimentStatus:
    """``srm_p_value``: the p-value that units were split as planned (None before any unit); a value under the
    spec's ``srm_alpha`` means the assignment or the logging is broken and no effect estimate can be trusted.
    ``foreign``: records that name the experiment but a different spec hash (an older run of the name)."""

    state: ExperimentState
    arms: tuple[ArmStatus, ...]
    srm_p_value: float | None
    foreign: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sample_ratio_mismatch(self) -> bool:
        return self.srm_p_value is not None and self.srm_p_value < self.state.spec.srm_alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.state.to_dict(),
            "arms": [vars(a) | {"versions": list(a.versions)} for a in self.arms],
            "srm_p_value": self.srm_p_value, "sample_ratio_mismatch": self.sample_ratio_mismatch,
            "foreign": self.foreign, "notes": list(self.notes),
        }  # fmt: skip


def experiment_status(
    state: ExperimentState, predictions: Iterable[Prediction], decisions: Iterable[DecisionRecord] = ()
) -> ExperimentStatus:
    """Count the experiment's prediction records and decision records (``ctx.decide``) per arm: units once each,
    by the arm that acted for them, from both kinds of record."""
    spec = state.spec
    spec_hash = spec.spec_hash()
    units: dict[str, set[str]] = {a.name: set() for a in spec.arms}
    acting: dict[str, int] = dict.fromkeys(units, 0)
    shadow: dict[str, int] = dict.fromkeys(units, 0)
    versions: dict[str, set[int]] = {a: set() for a in units}
    foreign = 0
    for p in predictions:
        if p.experiment != spec.name:
            continue
        if p.spec_hash != spec_hash or p.arm not in units:
            foreign += 1
            continue
        versions[p.arm].add(p.version)
        if p.acting is False and not _is_holdout(state, p.arm):
            shadow[p.arm] += 1
            continue
        acting[p.arm] += 1
        if p.unit is not None:
            units[p.arm].add(p.unit)
    decided: dict[str, int] = dict.fromkeys(units, 0)
    for d in decisions:
        if d.experiment != spec.name:
            continue
        if d.spec_hash != spec_hash or d.arm not in units:
            foreign += 1
            continue
        versions[d.arm].add(d.version)
        if d.acting is False and not _is_holdout(state, d.arm):
            continue
        decided[d.arm] += 1
        units[d.arm].add(d.entity)
    counts = [len(units[a.name]) for a in spec.arms]
    p_value = srm_p_value(counts, list(spec.weights)) if sum(counts) and state.acting is None else None
    notes: list[str] = []
    if state.acting is not None:  # the loop's shadow phase: no split to check
        notes.append(f"arm {state.acting!r} acts for every unit, the others are scored in shadow only")
    if foreign:
        notes.append(f"{foreign} records name {spec.name!r} under another spec (an earlier run): not counted")
    arms = tuple(
        ArmStatus(a.name, a.weight, len(units[a.name]), acting[a.name], shadow[a.name],
                  tuple(sorted(versions[a.name])), decided[a.name])
        for a in spec.arms
    )  # fmt: skip
    return ExperimentStatus(state, arms, p_value, foreign, tuple(notes))


def read_status(
    log: EventLog, state: ExperimentState, predictions_topic: str, decisions_topic: str = "decisions"
) -> ExperimentStatus:
    """:func:`experiment_status` over every record on ``predictions_topic`` and ``decisions_topic`` (records of
    other kinds are skipped; a missing topic has none)."""
    from kawa.errors import EventError, TopicNotFound
    from kawa.evaluation.experiments import read_to_end
    from kawa.ml.prediction_log import read_prediction
    from kawa.monitor.records import DecisionRecord, decode

    def exists(topic: str) -> bool:
        try:
            log.describe_topic(topic)
        except TopicNotFound:
            return False
        return True

    def predictions() -> Iterable[Prediction]:
        for record in read_to_end(log, predictions_topic) if exists(predictions_topic) else ():
            try:
                yield read_prediction(record)
            except EventError:
                continue

    def decisions() -> Iterable[DecisionRecord]:
        for record in read_to_end(log, decisions_topic) if exists(decisions_topic) else ():
            try:
                item = decode(record)
            except EventError:
                continue
            if isinstance(item, DecisionRecord):
                yield item

    return experiment_status(state, predictions(), decisions())


def _is_holdout(state: ExperimentState, arm: str) -> bool:
    return any(a.name == arm and a.holdout for a in state.spec.arms)
