"""Continuous causal evaluation: the pure, I/O-free core (issue #14).

- :mod:`~kawa.evaluation.spec` — frozen experiment specs with a stable hash;
- :mod:`~kawa.evaluation.assignment` — sticky hash assignment and shadow mode (no numpy: request path);
- :mod:`~kawa.evaluation.sequential`, :mod:`~kawa.evaluation.srm`, :mod:`~kawa.evaluation.multiple`,
  :mod:`~kawa.evaluation.accrual` — always-valid inference, the SRM gate, corrections, maturity-aware accrual;
- :mod:`~kawa.evaluation.decision` — the decision rule, looks and decision records;
- :mod:`~kawa.evaluation.ope` — off-policy evaluation and intervention effects.

Only the spec and assignment are imported here, so the request path does not load numpy or scipy.
"""

from kawa.evaluation.assignment import Assigner, Assignment, ShadowDecision, assign, shadow, unit_uniform
from kawa.evaluation.errors import EvaluationError, InvalidExperimentSpec, NoOverlap, NoPropensities
from kawa.evaluation.spec import Arm, ExperimentSpec, Guardrail

__all__ = ["Arm", "Assigner", "Assignment", "EvaluationError", "ExperimentSpec", "Guardrail",
           "InvalidExperimentSpec", "NoOverlap", "NoPropensities", "ShadowDecision", "assign", "shadow",
           "unit_uniform"]
