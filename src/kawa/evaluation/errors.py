"""Errors of the evaluation core."""

from __future__ import annotations

from kawa.errors import KawaError


class EvaluationError(KawaError):
    """An experiment spec, a log or a look was given data the evaluation core cannot use (the message says
    what to do)."""


class InvalidExperimentSpec(EvaluationError):
    """An experiment spec is inconsistent: weights, arms, alpha, samples or guardrails."""


class NoPropensities(EvaluationError):
    """A decision log lacks the propensities off-policy evaluation needs."""


class NoOverlap(EvaluationError):
    """The candidate policy takes actions the logging policy never takes, so the log cannot evaluate it."""


class RecordMismatch(EvaluationError):
    """A decision record does not match the spec, rule version or data it is recomputed from."""
