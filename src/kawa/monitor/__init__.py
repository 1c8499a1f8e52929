"""Monitoring's statistical core: mergeable sketches, drift statistics, event-time windows and detectors
calibrated to a false-alarm budget; decision records, the delayed-outcome join, matured-cohort performance
and label-free estimates (:mod:`kawa.monitor.cbpe`). Pure and I/O-free (numpy, with scipy for p-values),
except :class:`OutcomeJoiner` (loaded on first use), the join's one service. See docs/monitoring.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kawa.monitor.alerts import Alert, Finding, Resolved
from kawa.monitor.calibrate import SCORE, DetectorState, DriftDetector, calibrate, correct
from kawa.monitor.drift import FeatureDrift, compare
from kawa.monitor.errors import LayoutMismatch, MonitorError
from kawa.monitor.join import Advance, JoinConfig, JoinCounts, JoinState, Matured, advance, on_decision, on_outcome
from kawa.monitor.performance import CohortPerformance, Interval, Metrics, cohorts, delong, evaluate, wilson
from kawa.monitor.records import DecisionRecord, FeatureDecl, OutcomeEvent, SnapshotSpec
from kawa.monitor.sample import Sample
from kawa.monitor.sequential import (
    SequentialAlert,
    SequentialDetector,
    SequentialResolved,
    SequentialState,
    calibrate_sequential,
)
from kawa.monitor.sketch import (
    CategoricalSketch,
    NumericSketch,
    Profile,
    build_profile,
    categorical_reference,
    numeric_reference,
)
from kawa.monitor.windows import Window, Windows, WindowState

if TYPE_CHECKING:
    from kawa.monitor.outcomes import OutcomeJoiner as OutcomeJoiner

__all__ = [
    "SCORE",
    "Advance",
    "Alert",
    "CategoricalSketch",
    "CohortPerformance",
    "DecisionRecord",
    "DetectorState",
    "DriftDetector",
    "FeatureDecl",
    "FeatureDrift",
    "Finding",
    "Interval",
    "JoinConfig",
    "JoinCounts",
    "JoinState",
    "LayoutMismatch",
    "Matured",
    "Metrics",
    "MonitorError",
    "NumericSketch",
    "OutcomeEvent",
    "OutcomeJoiner",
    "Profile",
    "Resolved",
    "Sample",
    "SequentialAlert",
    "SequentialDetector",
    "SequentialResolved",
    "SequentialState",
    "SnapshotSpec",
    "Window",
    "WindowState",
    "Windows",
    "advance",
    "build_profile",
    "calibrate",
    "calibrate_sequential",
    "categorical_reference",
    "cohorts",
    "compare",
    "correct",
    "delong",
    "evaluate",
    "numeric_reference",
    "on_decision",
    "on_outcome",
    "wilson",
]


def __getattr__(name: str) -> Any:
    # The joiner reads the log: its imports (the CloudEvents SDK, the log) load only when it is used.
    if name == "OutcomeJoiner":
        from kawa.monitor.outcomes import OutcomeJoiner

        return OutcomeJoiner
    raise AttributeError(f"module 'kawa.monitor' has no attribute {name!r}")
