"""Experiments in the request path: ``ctx.model(ref, experiment=..., unit=...)`` returns an :class:`ArmPredictor`.

The router assigns the unit (pure, sticky: :mod:`kawa.evaluation.assignment`), picks the model version its arm
names, and wraps every prediction in :func:`~kawa.functions.types.allocating`, so the prediction record — the
decision record monitoring and evaluation read — carries the experiment, the arm, its propensity, the unit
and the spec's hash. App code does not change between arms, nor when the experiment stops: a stopped
experiment routes every unit to ``ref`` again, with no experiment fields on its records.

- An arm with a ``model`` reference is scored with that model; an arm without one (a baseline ``policy`` or a
  ``holdout``) is scored with ``ref``, so its score is still on record; :attr:`ArmPredictor.acts` is False for
  a holdout (compute, do not act — the silent arm) and :attr:`ArmPredictor.policy` names a baseline policy the
  app applies instead of the score.
- **Shadow mode** (an experiment created with ``shadow=True``) scores every arm that has a model on every call
  and records each (``acting`` false for the others), so off-policy evaluation has every candidate's score.
  One created with an ``acting`` arm (the loop's shadow phase) gives every unit that arm (propensity 1) and
  scores the others in shadow only: they are never acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kawa.evaluation.assignment import Assigner
from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.experiments import ExperimentNotFound, ExperimentState
from kawa.functions.types import Allocation, allocating

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from kawa.evaluation.spec import Arm, ExperimentSpec
    from kawa.functions.types import Predictor

__all__ = ["ArmPredictor", "ExperimentSource", "RoutePlan", "StaticExperiments", "check_model", "plan", "route"]


class ExperimentSource(Protocol):
    """Where the request path finds an experiment: the log's cached view, or fixed states in tests."""

    def get(self, name: str) -> ExperimentState: ...

    def running_for(self, model: str) -> ExperimentState | None:
        """The running experiment on ``model``, if any (what ``ctx.model(ref, unit=...)`` joins)."""
        ...


class StaticExperiments:
    """A fixed set of experiments (running unless given as stopped states): for unit tests."""

    def __init__(self, experiments: Mapping[str, ExperimentState]) -> None:
        self._states = dict(experiments)

    @classmethod
    def of(cls, *items: ExperimentSpec | ExperimentState, shadow: bool = False) -> StaticExperiments:
        states = [i if isinstance(i, ExperimentState) else ExperimentState(i, "running", 0, shadow=shadow)
                  for i in items]  # fmt: skip
        return cls({s.name: s for s in states})

    def get(self, name: str) -> ExperimentState:
        state = self._states.get(name)
        if state is None:
            given = ", ".join(sorted(self._states)) or "none"
            raise ExperimentNotFound(f"no experiment named {name!r} (given: {given})")
        return state

    def running_for(self, model: str) -> ExperimentState | None:
        from kawa.evaluation.experiments import _running_for

        return _running_for(list(self._states.values()), model)


@dataclass(frozen=True)
class _Scored:
    predictor: Predictor
    allocation: Allocation


class ArmPredictor:
    """The model a unit's arm names, for one event. Satisfies :class:`~kawa.functions.types.Predictor`."""

    def __init__(self, assigned: _Scored, arm: Arm, shadows: tuple[_Scored, ...] = ()) -> None:
        self._assigned = assigned
        self._shadows = shadows
        self.allocation = assigned.allocation
        self.holdout = arm.holdout
        self.policy = arm.policy

    @property
    def name(self) -> str:
        return self._assigned.predictor.name

    @property
    def version(self) -> int:
        return self._assigned.predictor.version

    @property
    def ref(self) -> str:
        return self._assigned.predictor.ref

    @property
    def tags(self) -> Mapping[str, str]:
        return self._assigned.predictor.tags

    @property
    def experiment(self) -> str:
        return self.allocation.experiment

    @property
    def arm(self) -> str:
        return self.allocation.arm

    @property
    def propensity(self) -> float:
        return self.allocation.propensity

    @property
    def acts(self) -> bool:
        """False for a holdout arm: the score is recorded, the app must not act on it."""
        return not self.holdout

    def predict(self, inputs: npt.ArrayLike, /) -> np.ndarray[Any, np.dtype[Any]]:
        """The assigned arm's output; in shadow mode the other arms are scored and recorded too."""
        with allocating(self._assigned.allocation):
            out = self._assigned.predictor.predict(inputs)
        for shadow in self._shadows:
            with allocating(shadow.allocation):
                shadow.predictor.predict(inputs)
        return out

    def __repr__(self) -> str:
        return f"<ArmPredictor {self.experiment}:{self.arm} -> {self.ref}>"


@dataclass(frozen=True)
class RoutePlan:
    """What one request of ``unit`` does under a running experiment: score ``ref`` (the arm's model, or the
    handler's own reference) under ``allocation``; in shadow mode also each of ``shadows`` (ref, allocation)."""

    arm: Arm
    ref: str
    allocation: Allocation
    shadows: tuple[tuple[str, Allocation], ...] = ()


def check_model(state: ExperimentState, ref: str) -> None:
    """Raise :class:`EvaluationError` when ``ref`` does not name the experiment's model."""
    name = ref.split("@", 1)[0].split("/", 1)[0]
    if name != state.spec.model:
        raise EvaluationError(
            f"experiment {state.name!r} is on model {state.spec.model!r}, but {ref!r} was asked for; "
            f"ask for {state.spec.model}@<alias> with this experiment"
        )


def plan(state: ExperimentState, ref: str, unit: str) -> RoutePlan:
    """Pure: the arm ``unit`` gets under the running experiment ``state`` and what to score for it."""
    spec = state.spec
    check_model(state, ref)
    if not unit:
        raise EvaluationError(f"experiment {spec.name!r} randomises by {spec.unit!r}: pass unit=<its value>")
    spec_hash = spec.spec_hash()
    if state.acting is not None:  # the shadow phase: one arm acts for everyone, the others are only scored
        acting = next(a for a in spec.arms if a.name == state.acting)
        return RoutePlan(acting, acting.model or ref, Allocation(spec.name, acting.name, 1.0, unit, acting=True,
                                                                 spec_hash=spec_hash),
                         tuple((o.model, Allocation(spec.name, o.name, 1.0, unit, acting=False, spec_hash=spec_hash))
                               for o in spec.arms if o.name != acting.name and o.model is not None))  # fmt: skip
    assignment = Assigner.for_spec(spec).assign(unit)
    arm = next(a for a in spec.arms if a.name == assignment.arm)
    allocation = Allocation(spec.name, arm.name, assignment.propensity, unit, acting=not arm.holdout,
                        spec_hash=spec_hash)  # fmt: skip
    shadows: tuple[tuple[str, Allocation], ...] = ()
    if state.shadow:
        shadows = tuple(
            (other.model, Allocation(spec.name, other.name, other.weight, unit, acting=False, spec_hash=spec_hash))
            for other in spec.arms
            if other.name != arm.name and other.model is not None
        )
    return RoutePlan(arm, arm.model or ref, allocation, shadows)


def route(state: ExperimentState, ref: str, unit: str, models: Any) -> Predictor:
    """The predictor for ``unit`` under ``state`` (``models.predictor(ref)`` loads a version). A stopped
    experiment routes to ``ref`` itself. Raises :class:`EvaluationError` when ``ref`` is not the experiment's
    model, or ``unit`` is empty."""
    if not state.running:
        check_model(state, ref)
        return models.predictor(ref)  # type: ignore[no-any-return]
    chosen = plan(state, ref, unit)
    assigned = _Scored(models.predictor(chosen.ref), chosen.allocation)
    shadows = tuple(_Scored(models.predictor(r), d) for r, d in chosen.shadows)
    return ArmPredictor(assigned, chosen.arm, shadows)
