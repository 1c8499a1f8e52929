"""The fraud app's errors: one :class:`~kawa.errors.KawaError` subtree whose messages say what to do."""

from __future__ import annotations

from kawa.errors import KawaError


class FraudError(KawaError):
    """Root of the fraud app's errors."""


class InvalidTransactions(FraudError):
    """A transaction table breaks its contract (column lengths, time order, label references)."""


class MissingDependency(FraudError):
    """An optional package the fraud app needs for this step is not installed."""


class InvalidSettings(FraudError, ValueError):
    """A parameter is out of its range (a capacity, a probability, a k)."""
