"""What a drift detector reports: per-test findings, an alert with its evidence, and its resolution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TestKind = Literal["distribution", "missing", "unseen"]


@dataclass(frozen=True)
class Finding:
    """One test on one feature (or the score) in one window.

    ``value`` is the statistic, ``effect`` its effect size (the statistic itself, except chi-square whose
    effect is Cramer's V and the share tests whose effect is the change in share), ``p_value`` the test's
    p-value before correction (bootstrap p-values above the detector's false-alarm level are reported as 1.0),
    ``threshold`` the statistic's critical value at the Bonferroni level (NaN for the share tests). A finding
    alarms when it is significant after the multiple-test correction *and* its effect reaches ``min_effect``.
    """

    feature: str
    test: TestKind
    statistic: str
    value: float
    effect: float
    min_effect: float
    threshold: float
    p_value: float
    n_reference: int
    n_live: int
    significant: bool
    alarm: bool


@dataclass(frozen=True)
class Alert:
    """Drift begun: the window that raised it and the findings that alarmed there, with their evidence."""

    window_start: float
    window_end: float
    reference_version: str
    correction: str
    false_alarm_level: float
    findings: tuple[Finding, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.feature for f in self.findings))


@dataclass(frozen=True)
class Resolved:
    """Drift cleared: the alert it ends and the window in which the condition was last found clear."""

    alert: Alert
    window_start: float
    window_end: float
