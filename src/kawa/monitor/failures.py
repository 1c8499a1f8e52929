"""Failure records: an event an experiment arm was serving when its handler failed, for the error-rate guardrail.

A decision record says what an arm decided; when the handler fails after ``ctx.model(ref, experiment=...,
unit=...)`` gave it an arm, there is no decision to record, and without a record of the failure a challenger
that crashes on some inputs would look *better* (its failures leave the sample). So the function host writes a
**failure record** (``kawa.monitor.failure``) for each failed attempt, on the topic the decisions go to: the
event's :class:`~kawa.events.EventRef`, the arm's model version, the unit, the experiment, arm, propensity and
spec hash, the attempt number and the reason *code* (:func:`kawa.deadletter.classify`: ``handler-error``,
``timeout``, ``invalid-input`` …; never the error's text, which may hold PHI).

:class:`~kawa.evaluation.cohorts.Cohorts` turns them into the ``error_rate`` guardrail: the share of an arm's
served events that failed and were never decided (a retry that succeeds takes its failure back).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from kawa.errors import EventError
from kawa.events.ref import EventRef
from kawa.events.schemas import EventSchema, read_data, register_schema
from kawa.monitor.errors import MonitorError

if TYPE_CHECKING:
    from kawa.events.cloudevents import CloudEvent
    from kawa.functions.types import Allocation
    from kawa.log.base import Record

__all__ = ["FAILURE_EVENT", "FailureData", "FailureRecord", "decode_failure"]

FAILURE_EVENT = "kawa.monitor.failure"
_NAMESPACE = uuid.UUID("3b8e0f71-5c2d-4e9a-a7f4-91d2c6b0e845")


@dataclass(frozen=True)
class FailureRecord:
    """One failed attempt of a handler that an experiment arm was serving (see the module docstring)."""

    ref: EventRef
    model: str
    version: int
    entity: str
    failed_at: float
    attempt: int
    reason: str
    experiment: str
    arm: str
    propensity: float
    spec_hash: str
    acting: bool = True

    def __post_init__(self) -> None:
        if not self.model or not self.entity or not self.experiment or not self.arm:
            raise MonitorError("a failure record needs its model, unit, experiment and arm")
        if not 0.0 < self.propensity <= 1.0:
            raise MonitorError(f"a propensity is a probability in (0, 1], got {self.propensity}")
        if self.attempt < 1 or not math.isfinite(self.failed_at):
            raise MonitorError("a failure record needs its attempt (1, 2, ...) and a finite time")

    @classmethod
    def of(cls, ref: EventRef, model: str, version: int, allocation: Allocation, *, failed_at: float,
           attempt: int, reason: str) -> FailureRecord:  # fmt: skip
        return cls(ref, model, version, allocation.unit, failed_at, attempt, reason, allocation.experiment,
                   allocation.arm, allocation.propensity, allocation.spec_hash, allocation.acting)  # fmt: skip

    @property
    def key(self) -> str:
        """The attempt's identity: a host that redoes an attempt after a crash writes the same event id."""
        return f"{self.ref.key()}\x1f{self.model}\x1f{self.version}\x1f{self.attempt}"

    def to_event(self, source: str) -> CloudEvent:
        from datetime import UTC, datetime

        from kawa.events.cloudevents import new_event

        body = {"event": self.ref.to_json(), **{k: v for k, v in asdict(self).items() if k != "ref"}}
        return new_event(
            FAILURE_EVENT, source, json.dumps(body, separators=(",", ":"), allow_nan=False).encode(),
            id=str(uuid.uuid5(_NAMESPACE, self.key)), time=datetime.fromtimestamp(self.failed_at, UTC),
            datacontenttype="application/json", extensions={"partitionkey": self.model},
        )  # fmt: skip


class FailureData(EventSchema):
    """``kawa.monitor.failure`` data (see :class:`FailureRecord`)."""

    event: EventRef
    model: str
    version: int
    entity: str
    failed_at: float
    attempt: int
    reason: str
    experiment: str
    arm: str
    propensity: float
    spec_hash: str
    acting: bool = True

    def record(self) -> FailureRecord:
        return FailureRecord(ref=self.event, **self.model_dump(exclude={"event"}))


register_schema(FAILURE_EVENT, FailureData)


def decode_failure(event: CloudEvent | Record) -> FailureRecord | None:
    """The failure record a log record (binary mode, as :meth:`FailureRecord.to_event` writes it) or a CloudEvent
    holds, or None for any other event type. :class:`~kawa.errors.EventError` when its data does not match."""
    from kawa.log.base import Record

    try:
        if isinstance(event, Record):
            if event.header("ce_type") != FAILURE_EVENT.encode():
                return None
            return FailureData.model_validate_json(event.value or b"").record()
        if event.get_type() != FAILURE_EVENT:
            return None
        return read_data(FailureData, event.get_data()).record()
    except (ValidationError, MonitorError) as exc:
        raise EventError(f"a {FAILURE_EVENT} record is invalid: {_first_problem(exc)}") from None


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first: dict[str, Any] = dict(exc.errors()[0])
        return f"{'.'.join(str(p) for p in first['loc']) or '(data)'}: {first['msg']}"
    return str(exc)
