"""Sticky, hash-based assignment of units to arms, and shadow mode.

``u = sha256(salt ␟ unit)`` read as 53 bits gives a number uniform in [0, 1); the arm is the one whose
cumulative-weight interval holds ``u``. The same (unit, salt) always gets the same arm (sticky); a different salt
gives an independent draw, so two experiments do not share their splits. The propensity of the assigned arm is
its weight — the probability the randomisation gave it — and goes into every decision record.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kawa.evaluation.errors import EvaluationError, InvalidExperimentSpec
from kawa.evaluation.spec import ExperimentSpec

_SEPARATOR = "\x1f"  # ASCII unit separator: no (salt, unit) pair can collide with another by concatenation
_SCALE = float(2**53)


def unit_uniform(unit: str, salt: str) -> float:
    """A number in [0, 1), fixed for (unit, salt), uniform over units and independent across salts."""
    digest = hashlib.sha256(f"{salt}{_SEPARATOR}{unit}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _SCALE


@dataclass(frozen=True)
class Assignment:
    arm: str
    propensity: float


class Assigner:
    """Assigns units for one (salt, arms/weights); build once, call :meth:`assign` per request."""

    def __init__(self, salt: str, arms: Sequence[tuple[str, float]]) -> None:
        if not arms:
            raise InvalidExperimentSpec("assignment needs at least one arm with a weight")
        total = math.fsum(w for _, w in arms)
        if any(not (w > 0) for _, w in arms) or abs(total - 1.0) > 1e-9:
            raise InvalidExperimentSpec(f"assignment weights must be positive and sum to 1, got "
                                        f"{[w for _, w in arms]}")
        self._salt = salt
        self._names = tuple(name for name, _ in arms)
        self._weights = tuple(w for _, w in arms)
        edges, acc = [], 0.0
        for w in self._weights[:-1]:
            acc += w
            edges.append(acc)
        self._edges = tuple(edges)  # the last arm takes everything above the last edge: no rounding gap

    @classmethod
    def for_spec(cls, spec: ExperimentSpec) -> Assigner:
        return cls(spec.salt, [(arm.name, arm.weight) for arm in spec.arms])

    def assign(self, unit: str) -> Assignment:
        i = bisect.bisect_right(self._edges, unit_uniform(unit, self._salt))
        return Assignment(self._names[i], self._weights[i])

    def propensities(self) -> dict[str, float]:
        """The logging policy: every arm's probability, identical for every unit."""
        return dict(zip(self._names, self._weights, strict=True))


def assign(unit: str, salt: str, arms: Sequence[tuple[str, float]]) -> Assignment:
    """Pure sticky assignment ``(unit, salt, arms) -> (arm, propensity)``; see :class:`Assigner` for reuse."""
    return Assigner(salt, arms).assign(unit)


@dataclass(frozen=True)
class ShadowDecision:
    """Shadow mode: every arm was scored, only ``acting`` arm's score acts; all scores go to the log so that
    off-policy evaluation can value any candidate policy over the same units."""

    arm: str
    propensity: float
    acting_score: float
    scores: Mapping[str, float]
    propensities: Mapping[str, float]


def shadow(assigner: Assigner, unit: str, scores: Mapping[str, float]) -> ShadowDecision:
    """Combine one unit's assignment with the scores of every arm (shadow mode).

    Raises :class:`EvaluationError` when a score is missing: a shadow log with holes cannot be evaluated.
    """
    probs = assigner.propensities()
    missing = [name for name in probs if name not in scores]
    if missing:
        raise EvaluationError(f"shadow mode needs a score from every arm; missing {', '.join(missing)} — score "
                              "each arm's model on the unit before acting")
    chosen = assigner.assign(unit)
    return ShadowDecision(chosen.arm, chosen.propensity, float(scores[chosen.arm]),
                          {k: float(scores[k]) for k in probs}, probs)
