"""Experiments as frozen, validated specs with a stable hash.

An :class:`ExperimentSpec` is everything a decision depends on: the arms and their traffic weights, the
randomisation unit and salt, the primary metric, guardrails, alpha, the maturity window and the sample plan.
Its :meth:`ExperimentSpec.spec_hash` is the sha256 of its canonical JSON, so a decision record names exactly the
spec it was made under.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kawa.evaluation.errors import InvalidExperimentSpec

MetricKind = Literal["mean", "proportion"]
GuardrailDirection = Literal["max", "min"]

_WEIGHT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Arm:
    """One arm: a model reference (``sepsis@challenger``) or a baseline policy (``no-alert``), and its share.

    A ``holdout`` arm receives no model action; it is the randomised control for intention-to-treat effects.
    """

    name: str
    weight: float
    model: str | None = None
    policy: str | None = None
    holdout: bool = False


@dataclass(frozen=True)
class Guardrail:
    """A metric (``latency_p99_ms``, ``alert_rate``, ``error_rate``) that no non-control arm may cross.

    ``direction="max"``: breached when the arm's value is above ``limit``; ``"min"``: below it.
    """

    metric: str
    limit: float
    direction: GuardrailDirection = "max"

    def breached(self, value: float) -> bool:
        return value > self.limit if self.direction == "max" else value < self.limit


@dataclass(frozen=True)
class ExperimentSpec:
    """A frozen experiment. Construction validates it and raises :class:`InvalidExperimentSpec` on error.

    ``control`` names the arm every other arm is compared with (default: the first arm). The mixing variance of
    the always-valid test comes from ``mixing_variance`` when given, else from the planned ``horizon``, else from
    ``max_sample``.
    """

    name: str
    model: str
    arms: tuple[Arm, ...]
    unit: str
    salt: str
    primary_metric: str
    maturity_window_s: float
    metric_kind: MetricKind = "mean"
    higher_is_better: bool = True
    control: str = ""
    guardrails: tuple[Guardrail, ...] = ()
    alpha: float = 0.05
    srm_alpha: float = 0.001
    horizon: int | None = None
    min_sample: int | None = None
    max_sample: int | None = None
    mixing_variance: float | None = None

    def __post_init__(self) -> None:
        # lists (from YAML or JSON) become tuples, so equal specs compare and hash equal
        object.__setattr__(self, "arms", tuple(self.arms))
        object.__setattr__(self, "guardrails", tuple(self.guardrails))
        if not self.control and self.arms:
            object.__setattr__(self, "control", self.arms[0].name)
        _validate(self)

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(arm.weight for arm in self.arms)

    @property
    def challengers(self) -> tuple[str, ...]:
        """Every arm compared with the control, in declaration order."""
        return tuple(arm.name for arm in self.arms if arm.name != self.control)

    def weight_of(self, arm: str) -> float:
        for a in self.arms:
            if a.name == arm:
                return a.weight
        raise InvalidExperimentSpec(f"experiment {self.name!r} has no arm {arm!r}; its arms are "
                                    f"{', '.join(self.arm_names)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "model": self.model,
            "arms": [{"name": a.name, "weight": a.weight, "model": a.model, "policy": a.policy,
                      "holdout": a.holdout} for a in self.arms],
            "unit": self.unit, "salt": self.salt, "primary_metric": self.primary_metric,
            "maturity_window_s": self.maturity_window_s, "metric_kind": self.metric_kind,
            "higher_is_better": self.higher_is_better, "control": self.control,
            "guardrails": [{"metric": g.metric, "limit": g.limit, "direction": g.direction}
                           for g in self.guardrails],
            "alpha": self.alpha, "srm_alpha": self.srm_alpha, "horizon": self.horizon,
            "min_sample": self.min_sample, "max_sample": self.max_sample,
            "mixing_variance": self.mixing_variance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        """Rebuild a spec from :meth:`to_dict` output (e.g. a decision record); unknown keys are refused."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidExperimentSpec(f"experiment spec has unknown fields {sorted(unknown)}; "
                                        f"the fields are {sorted(known)}")
        try:
            values = dict(data)
            values["arms"] = tuple(Arm(**a) for a in data.get("arms", ()))
            values["guardrails"] = tuple(Guardrail(**g) for g in data.get("guardrails", ()))
            return cls(**values)
        except TypeError as exc:
            raise InvalidExperimentSpec(f"experiment spec is incomplete or malformed: {exc}") from exc

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def spec_hash(self) -> str:
        """sha256 (hex) of the canonical JSON: equal specs hash equal, any changed field changes it."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


def _validate(spec: ExperimentSpec) -> None:
    where = f"experiment {spec.name!r}"
    for label, value in (("name", spec.name), ("model", spec.model), ("unit", spec.unit), ("salt", spec.salt),
                         ("primary_metric", spec.primary_metric)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidExperimentSpec(f"{where}: {label} must be a non-empty string")
    if len(spec.arms) < 2:
        raise InvalidExperimentSpec(f"{where}: give at least two arms (a control and a challenger)")
    names = [arm.name for arm in spec.arms]
    if len(set(names)) != len(names) or any(not n for n in names):
        raise InvalidExperimentSpec(f"{where}: arm names must be non-empty and distinct, got {names}")
    for arm in spec.arms:
        if not _is_number(arm.weight) or not math.isfinite(arm.weight) or arm.weight <= 0:
            raise InvalidExperimentSpec(f"{where}: arm {arm.name!r} has weight {arm.weight}; weights must be "
                                        "positive (drop an arm instead of giving it weight 0)")
        if arm.holdout and arm.model is not None:
            raise InvalidExperimentSpec(f"{where}: holdout arm {arm.name!r} must not name a model")
        if not arm.holdout and arm.model is None and arm.policy is None:
            raise InvalidExperimentSpec(f"{where}: arm {arm.name!r} needs a model reference, a baseline policy "
                                        "or holdout=True")
    total = sum(spec.weights)
    if abs(total - 1.0) > _WEIGHT_TOLERANCE:
        raise InvalidExperimentSpec(f"{where}: arm weights sum to {total:g}; make them sum to 1")
    if spec.control not in names:
        raise InvalidExperimentSpec(f"{where}: control {spec.control!r} is not one of the arms {names}")
    for label, a in (("alpha", spec.alpha), ("srm_alpha", spec.srm_alpha)):
        if not _is_number(a) or not 0 < a < 1:
            raise InvalidExperimentSpec(f"{where}: {label} must be between 0 and 1 (exclusive), got {a}")
    if spec.metric_kind not in ("mean", "proportion"):
        raise InvalidExperimentSpec(f"{where}: metric_kind must be 'mean' or 'proportion'")
    if (not _is_number(spec.maturity_window_s) or not math.isfinite(spec.maturity_window_s)
            or spec.maturity_window_s < 0):
        raise InvalidExperimentSpec(f"{where}: maturity_window_s must be a finite number of seconds >= 0")
    for label, n in (("horizon", spec.horizon), ("min_sample", spec.min_sample), ("max_sample", spec.max_sample)):
        if n is not None and (not isinstance(n, int) or n <= 0):
            raise InvalidExperimentSpec(f"{where}: {label} must be a positive whole number of units")
    if spec.min_sample is not None and spec.max_sample is not None and spec.min_sample > spec.max_sample:
        raise InvalidExperimentSpec(f"{where}: min_sample ({spec.min_sample}) exceeds max_sample "
                                    f"({spec.max_sample})")
    mv = spec.mixing_variance
    if mv is not None and not (_is_number(mv) and math.isfinite(mv) and mv > 0):
        raise InvalidExperimentSpec(f"{where}: mixing_variance must be a positive number")
    if spec.mixing_variance is None and spec.horizon is None and spec.max_sample is None:
        raise InvalidExperimentSpec(f"{where}: give a planned horizon (units), a max_sample or a mixing_variance "
                                    "so the always-valid test can be tuned")
    metrics = [g.metric for g in spec.guardrails]
    if len(set(metrics)) != len(metrics):
        raise InvalidExperimentSpec(f"{where}: each guardrail metric may appear once, got {metrics}")
    for g in spec.guardrails:
        if g.direction not in ("max", "min") or not _is_number(g.limit) or not math.isfinite(g.limit):
            raise InvalidExperimentSpec(f"{where}: guardrail {g.metric!r} needs a finite limit and direction "
                                        "'max' or 'min'")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
