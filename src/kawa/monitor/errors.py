"""Errors of the monitoring core."""

from __future__ import annotations

from kawa.errors import KawaError


class MonitorError(KawaError):
    """A profile, sketch, window or detector was given data it cannot use (the message says what to do)."""


class LayoutMismatch(MonitorError):
    """Two sketches with different bins (from different reference profiles) were combined."""
