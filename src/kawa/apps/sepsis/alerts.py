"""The alert policy, pure: a threshold, a suppression window per patient, a clinician-capacity budget.

:func:`decide` takes the policy, what it needs of the past (the patient's last alert, the alert times of the
last hour) and one score, and returns a :class:`Verdict` with the next past. No clock, no I/O: the caller
(the scoring function, a batch evaluation, a property test) keeps the state. Guarantees, for scores fed in
time order (property-tested):

- never two alerts for one patient within ``suppress_h`` hours;
- never more than ``budget_per_h`` alerts in any window of one hour;
- a score below ``threshold`` never alerts, and one at or above it alerts unless one of the two above stops it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from kawa.errors import ConfigError

__all__ = ["AlertPolicy", "Verdict", "decide", "run"]

Why = Literal["alert", "below", "suppressed", "over-budget"]
HOUR = 1.0


@dataclass(frozen=True)
class AlertPolicy:
    """Alert at ``score >= threshold``; not within ``suppress_h`` of the patient's last alert; at most
    ``budget_per_h`` alerts in any hour (the alert that would exceed it is dropped, not queued)."""

    threshold: float
    suppress_h: float = 12.0
    budget_per_h: int = 60

    def __post_init__(self) -> None:
        if self.suppress_h < 0 or self.budget_per_h < 1 or math.isnan(self.threshold):
            raise ConfigError(
                "an alert policy needs a threshold, suppress_h >= 0 and budget_per_h >= 1 "
                f"(got {self.threshold}, {self.suppress_h}, {self.budget_per_h})"
            )


@dataclass(frozen=True)
class Verdict:
    """What the policy said about one score; ``recent``: the alert times of the last hour after it."""

    why: Why
    recent: tuple[float, ...]

    @property
    def alert(self) -> bool:
        return self.why == "alert"


def decide(
    policy: AlertPolicy, last_alert_h: float | None, recent: tuple[float, ...], time_h: float, score: float
) -> Verdict:
    """The verdict on ``score`` at ``time_h`` for a patient last alerted at ``last_alert_h`` (None: never),
    with ``recent`` the alert times (any patient) of the hour before."""
    kept = tuple(t for t in recent if t > time_h - HOUR)
    if not score >= policy.threshold:  # NaN never alerts
        return Verdict("below", kept)
    if last_alert_h is not None and time_h - last_alert_h < policy.suppress_h:
        return Verdict("suppressed", kept)
    if len(kept) >= policy.budget_per_h:
        return Verdict("over-budget", kept)
    return Verdict("alert", (*kept, time_h))


def run(policy: AlertPolicy, scores: Iterable[tuple[str, float, float]]) -> Iterator[tuple[str, float, Verdict]]:
    """The verdicts on ``(patient, time_h, score)`` rows in time order (what the scoring function does one
    event at a time, for batch evaluation and tests)."""
    last: dict[str, float] = {}
    recent: tuple[float, ...] = ()
    for patient, time_h, score in scores:
        verdict = decide(policy, last.get(patient), recent, time_h, score)
        recent = verdict.recent
        if verdict.alert:
            last[patient] = time_h
        yield patient, time_h, verdict
