"""Retraining policies: what triggers a training, what limits it, how the candidate is trained and which gates
it must pass before it is promoted. Frozen, validated on construction (:class:`InvalidPolicy` says what to
change), loadable from ``kawa.yaml`` (``loop.policies``) or the API as plain mappings.

.. code-block:: yaml

    loop:
      policies:
        - model: fraud
          triggers: {alerts: [drift, performance], performance_drop: 0.05, schedule_s: 604800, new_outcomes: 5000}
          limits: {cooldown_s: 86400, min_outcomes: 2000, max_candidates: 1}
          training: {entrypoint: "kawa.apps.fraud.train:train", window_s: 1209600, cpu: 2, gpu: 0}
          gates:
            offline_margin: 0.0          # candidate's holdout metric >= champion's - margin
            ope_margin: 0.01             # off-policy lower bound of (candidate - champion) >= -margin
            shadow_outcomes: 500         # matured outcomes scored in shadow before the canary
            canary: {share: 0.2, primary_metric: cp_at_100, maturity_window_s: 86400, horizon: 20000,
                     guardrails: [{metric: latency_p99_ms, limit: 10}]}
            approval: false              # true: a person approves each promotion (kawa loop approve)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kawa.errors import KawaError

__all__ = ["Canary", "Gates", "InvalidPolicy", "Limits", "LoopPolicy", "Training", "Triggers"]


class InvalidPolicy(KawaError):
    """A loop policy that cannot be used; the message says which field to change."""


@dataclass(frozen=True)
class Triggers:
    """What starts a training. ``alerts``: monitor alert types (``drift``, ``performance``, ``missing``...);
    ``performance_drop``: a matured-metric drop of at least this much whose interval excludes 0;
    ``schedule_s``: at least this long since the last training; ``new_outcomes``: this many newly labelled
    outcomes since the last training; ``performance_metric``: the matured metric the drop is measured on (one
    of the monitor's: auroc, auprc, precision_at_k, sensitivity, ppv, brier)."""

    alerts: tuple[str, ...] = ()
    performance_drop: float | None = None
    schedule_s: float | None = None
    new_outcomes: int | None = None
    performance_metric: str = "auroc"


PERFORMANCE_METRICS = ("auroc", "auprc", "precision_at_k", "sensitivity", "ppv", "brier")


@dataclass(frozen=True)
class Limits:
    """``cooldown_s``: no training starts within this long of the previous one; ``min_outcomes``: matured
    outcomes needed before a trigger counts; ``max_candidates``: candidates in flight at once."""

    cooldown_s: float = 3600.0
    min_outcomes: int = 0
    max_candidates: int = 1


@dataclass(frozen=True)
class Training:
    """The app's trainer (``module:function``, run as a Kawa job), its parameters and resources, and the data
    window it trains on (the last ``window_s`` seconds of labelled data; None: all of it)."""

    entrypoint: str
    params: Mapping[str, Any] = field(default_factory=dict)
    window_s: float | None = None
    cpu: float = 1.0
    gpu: int = 0


@dataclass(frozen=True)
class Canary:
    """The canary experiment: ``share`` of units go to the candidate, the rest stay on the champion."""

    share: float = 0.1
    unit: str = "entity"
    primary_metric: str = "outcome"
    metric_kind: str = "proportion"
    higher_is_better: bool = True
    maturity_window_s: float = 3600.0
    horizon: int = 10_000
    alpha: float = 0.05
    guardrails: tuple[Mapping[str, Any], ...] = ()
    max_sample: int | None = None


@dataclass(frozen=True)
class Gates:
    """``offline_margin``: the candidate's holdout metric may trail the champion's on the same window by at
    most this; ``ope_margin``: the off-policy lower bound of (candidate - champion) must be >= -margin (None:
    no OPE gate); ``shadow_outcomes``: matured outcomes scored in shadow before the canary (0: no shadow phase);
    ``canary``: the experiment (None: promote after the earlier gates, not recommended); ``approval``: a person
    approves each promotion."""

    offline_margin: float = 0.0
    ope_margin: float | None = None
    shadow_outcomes: int = 0
    canary: Canary | None = field(default_factory=Canary)
    approval: bool = False


@dataclass(frozen=True)
class LoopPolicy:
    model: str
    training: Training
    triggers: Triggers = field(default_factory=Triggers)
    limits: Limits = field(default_factory=Limits)
    gates: Gates = field(default_factory=Gates)
    champion_alias: str = "champion"

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopPolicy:
        """From ``kawa.yaml`` / the API; unknown fields are refused (a typo must not silently do nothing)."""
        try:
            _known(data, cls, "policy")
            gates = dict(data.get("gates") or {})
            _known(gates, Gates, "gates")
            canary = gates.get("canary", {})
            if canary is not None:
                _known(canary, Canary, "gates.canary")
                gates["canary"] = Canary(**{**canary, "guardrails": tuple(canary.get("guardrails", ()))})
            triggers = dict(data.get("triggers") or {})
            _known(triggers, Triggers, "triggers")
            triggers["alerts"] = tuple(triggers.get("alerts", ()))
            for part, kind in (("limits", Limits), ("training", Training)):
                _known(data.get(part) or {}, kind, part)
            return cls(
                model=data["model"], training=Training(**data["training"]), triggers=Triggers(**triggers),
                limits=Limits(**(data.get("limits") or {})), gates=Gates(**gates),
                champion_alias=data.get("champion_alias", "champion"),
            )  # fmt: skip
        except KeyError as exc:
            raise InvalidPolicy(f"a loop policy needs {exc.args[0]!r}") from None
        except TypeError as exc:
            raise InvalidPolicy(f"a loop policy is malformed: {exc}") from None


def _known(data: Any, kind: type, where: str) -> None:
    if not isinstance(data, Mapping):
        raise InvalidPolicy(f"{where} must be a mapping")
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidPolicy(f"{where} has unknown field(s) {unknown}; its fields are {sorted(names)}")


def _positive(value: float | None, label: str, *, zero: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, int | float) and math.isfinite(value) and (value >= 0 if zero else value > 0)
    if not ok:
        raise InvalidPolicy(f"{label} must be a {'non-negative' if zero else 'positive'} number, got {value!r}")


def _validate(p: LoopPolicy) -> None:
    where = f"loop policy of {p.model!r}"
    if not isinstance(p.model, str) or not p.model.strip():
        raise InvalidPolicy("a loop policy names its model")
    t, lim, g = p.triggers, p.limits, p.gates
    if not (t.alerts or t.performance_drop is not None or t.schedule_s is not None or t.new_outcomes is not None):
        raise InvalidPolicy(f"{where}: give at least one trigger (alerts, performance_drop, schedule_s or "
                            "new_outcomes), or the loop never trains")
    _positive(t.performance_drop, f"{where}: triggers.performance_drop")
    if t.performance_metric not in PERFORMANCE_METRICS:
        raise InvalidPolicy(f"{where}: triggers.performance_metric is one of {', '.join(PERFORMANCE_METRICS)}, "
                            f"got {t.performance_metric!r}")
    _positive(t.schedule_s, f"{where}: triggers.schedule_s")
    _positive(t.new_outcomes, f"{where}: triggers.new_outcomes")
    _positive(lim.cooldown_s, f"{where}: limits.cooldown_s", zero=True)
    _positive(lim.min_outcomes, f"{where}: limits.min_outcomes", zero=True)
    if not isinstance(lim.max_candidates, int) or lim.max_candidates < 1:
        raise InvalidPolicy(f"{where}: limits.max_candidates must be a whole number >= 1")
    if lim.max_candidates > 1:
        raise InvalidPolicy(f"{where}: limits.max_candidates above 1 is not supported yet (one candidate is "
                            "carried through shadow and canary at a time)")
    if ":" not in p.training.entrypoint:
        raise InvalidPolicy(f"{where}: training.entrypoint is module:function, got {p.training.entrypoint!r}")
    _positive(p.training.window_s, f"{where}: training.window_s")
    _positive(p.training.cpu, f"{where}: training.cpu")
    _positive(g.offline_margin, f"{where}: gates.offline_margin", zero=True)
    _positive(g.ope_margin, f"{where}: gates.ope_margin", zero=True)
    _positive(g.shadow_outcomes, f"{where}: gates.shadow_outcomes", zero=True)
    if g.canary is not None:
        c = g.canary
        if not 0 < c.share < 1:
            raise InvalidPolicy(f"{where}: gates.canary.share is the candidate's share of units, in (0, 1)")
        if c.metric_kind not in ("mean", "proportion"):
            raise InvalidPolicy(f"{where}: gates.canary.metric_kind is 'mean' or 'proportion'")
        _positive(c.maturity_window_s, f"{where}: gates.canary.maturity_window_s", zero=True)
        _positive(c.horizon, f"{where}: gates.canary.horizon")
        if not 0 < c.alpha < 1:
            raise InvalidPolicy(f"{where}: gates.canary.alpha must be in (0, 1)")
