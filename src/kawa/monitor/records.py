"""Decision records and outcome events: what monitoring joins, as typed CloudEvents.

A **decision record** (``kawa.monitor.decision``) is written for each prediction Kawa serves: the
:class:`~kawa.events.EventRef` of the event it served, the model name and version, the experiment arm and
propensity (empty until the evaluation issue fills them), the entity key (patient, card, image), the score
and/or action, the decision time and a *feature snapshot* of the model's inputs. The app declares which
features are recorded and which are PHI and never leave the function (:class:`SnapshotSpec`).

An **outcome event** (``kawa.monitor.outcome``) is the truth that arrives later: it names its decision by
``EventRef``, or an entity and the time the outcome refers to; it carries a label (0/1) or a value, and the
time it was observed. :mod:`kawa.monitor.join` links the two streams.

Times are seconds since the epoch (floats), as in :mod:`kawa.monitor.windows`. On the wire the data is compact
JSON (no spaces, fields without a value left out) in the Kafka binary content mode.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from kawa.errors import EventError
from kawa.events.ref import EventRef
from kawa.events.schemas import EventSchema, read_data, register_schema
from kawa.monitor.errors import MonitorError

if TYPE_CHECKING:
    from kawa.events.cloudevents import CloudEvent
    from kawa.log.base import Record

__all__ = [
    "DECISION_EVENT",
    "OUTCOME_EVENT",
    "DecisionData",
    "DecisionRecord",
    "FeatureDecl",
    "FeatureValue",
    "OutcomeData",
    "OutcomeEvent",
    "SnapshotSpec",
    "decode",
    "flatten",
]

DECISION_EVENT = "kawa.monitor.decision"
OUTCOME_EVENT = "kawa.monitor.outcome"
DECISIONS_TOPIC = "decisions"
"""Where ``ctx.decide`` writes decision records (and the outcome joiner and evaluator read them)."""
OUTCOMES_TOPIC = "outcomes"
FeatureKind = Literal["numeric", "categorical"]
FeatureValue = float | str | None

# Decision CloudEvent ids are derived from the decision's identity, so a record written twice (a retried
# handler) is one event for every consumer that deduplicates by source + id.
_NAMESPACE = uuid.UUID("6f1d3c52-9a0e-4f7b-8d36-2b1c9e7a4d10")


@dataclass(frozen=True)
class FeatureDecl:
    """One input the app declares: its name, kind, and whether it is PHI (then it is never recorded)."""

    name: str
    kind: FeatureKind = "numeric"
    phi: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise MonitorError("a declared feature needs a name")
        if self.kind not in ("numeric", "categorical"):
            raise MonitorError(f"feature {self.name!r}: kind must be 'numeric' or 'categorical', got {self.kind!r}")


@dataclass(frozen=True)
class SnapshotSpec:
    """The app's declaration of what a decision record keeps of the model's inputs.

    Only declared, non-PHI features are recorded: an input the app did not declare is left out (so a new
    input is not recorded by accident), a PHI feature is dropped, a declared feature the inputs lack is
    recorded as missing (``None``). Numeric values become floats (``NaN`` and infinities: missing),
    categorical values strings."""

    features: tuple[FeatureDecl, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise MonitorError(f"a snapshot spec declares each feature once; repeated: {sorted(_repeated(names))}")

    @classmethod
    def of(
        cls,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        phi: Sequence[str] = (),
        vectors: Mapping[str, int] | None = None,
    ) -> SnapshotSpec:
        """A spec from name lists; ``phi`` names inputs that are declared (so they are known) but never kept;
        ``vectors`` declares numeric vectors by length (an image's intensity histogram, an embedding of the
        model input) as features ``name_0 .. name_{n-1}`` (see :func:`flatten`)."""
        decls = [FeatureDecl(n, "numeric") for n in numeric] + [FeatureDecl(n, "categorical") for n in categorical]
        for name, size in (vectors or {}).items():
            decls += [FeatureDecl(f"{name}_{i}", "numeric") for i in range(size)]
        decls += [FeatureDecl(n, "numeric", phi=True) for n in phi]
        return cls(tuple(decls))

    @property
    def recorded(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if not f.phi)

    @property
    def excluded(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.phi)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.kind == "categorical" and not f.phi)

    def snapshot(self, inputs: Mapping[str, Any]) -> dict[str, FeatureValue]:
        """The recorded features of ``inputs``."""
        out: dict[str, FeatureValue] = {}
        for decl in self.features:
            if decl.phi:
                continue
            out[decl.name] = _coerce(decl, inputs.get(decl.name))
        return out


def flatten(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` with each sequence or 1-d array value spread into ``name_0 .. name_{n-1}`` (strings stay
    whole), so that vector summaries declared with ``SnapshotSpec.of(vectors=...)`` are recorded element-wise."""
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, str | bytes) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
            out[name] = value
        else:
            out.update({f"{name}_{i}": v for i, v in enumerate(value)})
    return out


def _repeated(names: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    return {n for n in names if n in seen or seen.add(n)}  # type: ignore[func-returns-value]


def _coerce(decl: FeatureDecl, value: Any) -> FeatureValue:
    if value is None:
        return None
    if decl.kind == "categorical":
        if isinstance(value, float) and math.isnan(value):
            return None
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MonitorError(
            f"feature {decl.name!r} is declared numeric but got a {type(value).__name__}; declare it "
            "categorical or pass a number"
        ) from None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class DecisionRecord:
    """One served prediction, as monitoring sees it. ``score`` and/or ``action`` is set; ``experiment``,
    ``arm``, ``propensity``, ``spec_hash`` and ``acting`` stay None outside an experiment (``acting`` False: the
    arm was scored in shadow or is a holdout, so the decision did not act; ``entity`` is then the experiment's
    randomisation unit)."""

    ref: EventRef
    model: str
    version: int
    entity: str
    decided_at: float
    score: float | None = None
    action: str | None = None
    arm: str | None = None
    propensity: float | None = None
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    experiment: str | None = None
    spec_hash: str | None = None
    acting: bool | None = None
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.score is None and self.action is None:
            raise MonitorError(f"decision for {self.ref.key()!r}: record its score, its action or both")
        if self.propensity is not None and not 0.0 < self.propensity <= 1.0:
            raise MonitorError(f"a propensity is a probability in (0, 1], got {self.propensity}")
        if not self.model or not self.entity:
            raise MonitorError("a decision record needs its model name and entity key")
        if not math.isfinite(self.decided_at):
            raise MonitorError("a decision's time must be a finite number of seconds since the epoch")

    @property
    def key(self) -> str:
        """The decision's identity: the event it served and the model version that decided (a shadow model
        deciding on the same event makes a second decision)."""
        return f"{self.ref.key()}\x1f{self.model}\x1f{self.version}"

    def data(self) -> DecisionData:
        return DecisionData(event=self.ref, **_fields_of(self, features=dict(self.features)))

    def to_event(self, source: str) -> CloudEvent:
        """The ``kawa.monitor.decision`` CloudEvent (id derived from :attr:`key`, partition key the model)."""
        return _event(
            DECISION_EVENT, source, self.data(), str(uuid.uuid5(_NAMESPACE, self.key)), self.decided_at, self.model
        )

    @classmethod
    def from_data(cls, data: DecisionData) -> DecisionRecord:
        return cls(ref=data.event, **_fields_of(data, names=_DECISION_FIELDS))


@dataclass(frozen=True)
class OutcomeEvent:
    """The truth about a decision: by ``ref``, or by ``entity`` and ``at`` (the time the outcome refers to,
    e.g. sepsis onset; default ``observed_at``). ``label`` (0/1) or ``value``; ``observed_at`` is when the
    truth became known. ``id`` is the outcome source's own identity, if it has one (a chargeback id)."""

    observed_at: float
    ref: EventRef | None = None
    entity: str | None = None
    at: float | None = None
    label: int | None = None
    value: float | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if self.ref is None and self.entity is None:
            raise MonitorError("an outcome names its decision: give the EventRef it served, or an entity key")
        if self.label is None and self.value is None:
            raise MonitorError("an outcome carries a label (0 or 1) or a value")
        if self.label is not None and self.label not in (0, 1):
            raise MonitorError(f"an outcome label is 0 or 1, got {self.label!r}; use value= for other outcomes")
        if not math.isfinite(self.observed_at) or (self.at is not None and not math.isfinite(self.at)):
            raise MonitorError("outcome times must be finite numbers of seconds since the epoch")

    @property
    def time(self) -> float:
        """The time the outcome refers to (``at``, else ``observed_at``)."""
        return self.observed_at if self.at is None else self.at

    @property
    def key(self) -> str:
        """Two outcomes with one key are one outcome sent twice: the source's ``id`` when it has one, else the
        outcome's content (target, time, label and value), so a redelivery and a repeated send both match."""
        if self.id is not None:
            return f"id\x1f{self.id}"
        target = self.ref.key() if self.ref is not None else f"{self.entity}\x1f{self.time!r}"
        return f"{target}\x1f{self.label!r}\x1f{self.value!r}"

    def data(self) -> OutcomeData:
        return OutcomeData(event=self.ref, **_fields_of(self))

    def to_event(self, source: str, *, id: str | None = None) -> CloudEvent:
        """The ``kawa.monitor.outcome`` CloudEvent, keyed by entity (or the decision's event source)."""
        key = self.entity if self.entity is not None else self.ref.key() if self.ref is not None else None
        return _event(OUTCOME_EVENT, source, self.data(), id, self.observed_at, key)

    @classmethod
    def from_data(cls, data: OutcomeData) -> OutcomeEvent:
        return cls(ref=data.event, **_fields_of(data, names=_OUTCOME_FIELDS))


class DecisionData(EventSchema):
    """``kawa.monitor.decision`` data (see :class:`DecisionRecord`)."""

    event: EventRef
    model: str
    version: int
    entity: str
    decided_at: float
    score: float | None = None
    action: str | None = None
    arm: str | None = None
    propensity: float | None = None
    features: dict[str, float | str | None] = {}
    experiment: str | None = None
    spec_hash: str | None = None
    acting: bool | None = None
    latency_ms: float | None = None

    def data(self) -> dict[str, Any]:
        """Fields that have a value (a snapshot keeps its missing features as null)."""
        out = self.model_dump(mode="json", exclude_none=True)
        out["features"] = dict(self.features)
        return out


class OutcomeData(EventSchema):
    """``kawa.monitor.outcome`` data (see :class:`OutcomeEvent`)."""

    event: EventRef | None = None
    entity: str | None = None
    at: float | None = None
    label: int | None = None
    value: float | None = None
    observed_at: float
    id: str | None = None

    def data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


register_schema(DECISION_EVENT, DecisionData)
register_schema(OUTCOME_EVENT, OutcomeData)

# A record and its wire schema share every field name but one: the record's ``ref`` is the data's ``event``.
_DECISION_FIELDS = tuple(f.name for f in fields(DecisionRecord) if f.name != "ref")
_OUTCOME_FIELDS = tuple(f.name for f in fields(OutcomeEvent) if f.name != "ref")
_FIELDS = {DecisionRecord: _DECISION_FIELDS, OutcomeEvent: _OUTCOME_FIELDS}


def _fields_of(obj: Any, *, names: tuple[str, ...] | None = None, **override: Any) -> dict[str, Any]:
    """``obj``'s values of the shared fields (its record type's, unless ``names`` says), ``override`` on top."""
    return {**{n: getattr(obj, n) for n in (names or _FIELDS[type(obj)])}, **override}


def _event(type_: str, source: str, data: EventSchema, id: str | None, at: float, key: str | None) -> CloudEvent:
    from kawa.events.cloudevents import new_event

    body = json.dumps(data.data(), separators=(",", ":"), allow_nan=False).encode()
    return new_event(
        type_,
        source,
        body,
        id=id,
        time=datetime.fromtimestamp(at, UTC),
        datacontenttype="application/json",
        extensions={"partitionkey": key} if key else None,
    )


def decode(event: CloudEvent | Record) -> DecisionRecord | OutcomeEvent | None:
    """The decision record or outcome a CloudEvent (or a log record holding one) carries; None for another
    event type. :class:`~kawa.errors.EventError` when the data does not match its schema.

    A log record in binary mode with JSON data (what :meth:`DecisionRecord.to_event` writes) is read without
    building the CloudEvent: the type comes from its header and the value is validated in one pass, about
    four times faster; any other record goes through the CloudEvents SDK."""
    from kawa.log.base import Record

    if isinstance(event, Record):
        header, ctype = event.header("ce_type"), event.header("content-type")
        if header is not None and event.header("ce_specversion") and ctype and ctype.startswith(b"application/json"):
            name = header.decode(errors="replace")
            if name not in (DECISION_EVENT, OUTCOME_EVENT):
                return None
            return _build(name, event.value or b"", (event.header("ce_id") or b"").decode(errors="replace"))
        from kawa.events.cloudevents import from_record

        event = from_record(event)
    kind = str(event.get_type())
    if kind not in (DECISION_EVENT, OUTCOME_EVENT):
        return None
    raw = event.get_data()
    if raw is None:
        raise EventError(f"{kind} event {event.get_id()!r} has no data")
    return _build(kind, raw, str(event.get_id()))


def _build(kind: str, raw: Any, id: str) -> DecisionRecord | OutcomeEvent:
    schema: type[DecisionData] | type[OutcomeData] = DecisionData if kind == DECISION_EVENT else OutcomeData
    if isinstance(raw, bytes | bytearray):
        try:
            data = schema.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(data)"
            raise EventError(
                f"{schema.__name__} data is invalid at {where!r}: {first['msg']}; {len(exc.errors())} problem(s) in all"
            ) from None
    else:
        data = read_data(schema, raw)
    try:
        if isinstance(data, DecisionData):
            return DecisionRecord.from_data(data)
        return OutcomeEvent.from_data(data)
    except MonitorError as exc:
        raise EventError(f"{kind} event {id!r}: {exc}") from None
