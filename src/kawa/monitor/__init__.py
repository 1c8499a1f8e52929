"""Monitoring's statistical core: mergeable sketches, drift statistics, event-time windows and detectors
calibrated to a false-alarm budget. Pure and I/O-free (numpy, with scipy for p-values); the service, CLI and
portal build on it. See docs/monitoring.md."""

from __future__ import annotations

from kawa.monitor.alerts import Alert, Finding, Resolved
from kawa.monitor.calibrate import SCORE, DetectorState, DriftDetector, calibrate, correct
from kawa.monitor.drift import FeatureDrift, compare
from kawa.monitor.errors import LayoutMismatch, MonitorError
from kawa.monitor.sketch import (
    CategoricalSketch,
    NumericSketch,
    Profile,
    build_profile,
    categorical_reference,
    numeric_reference,
)
from kawa.monitor.windows import Window, Windows, WindowState

__all__ = [
    "SCORE",
    "Alert",
    "CategoricalSketch",
    "DetectorState",
    "DriftDetector",
    "FeatureDrift",
    "Finding",
    "LayoutMismatch",
    "MonitorError",
    "NumericSketch",
    "Profile",
    "Resolved",
    "Window",
    "WindowState",
    "Windows",
    "build_profile",
    "calibrate",
    "categorical_reference",
    "compare",
    "correct",
    "numeric_reference",
]
