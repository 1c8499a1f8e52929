"""The audit record: who, project, action, resource, result, time, request id — as a CloudEvent."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kawa.events.cloudevents import CloudEvent, new_event

AUDIT_TOPIC = "kawa.audit"
AUDIT_TYPE = "kawa.audit.v1"
RESULTS = ("ok", "denied", "error")


@dataclass(frozen=True)
class AuditRecord:
    """One audited request. Holds names and statuses only, never request or response content (no PHI)."""

    user: str
    action: str
    resource: str
    result: str
    request_id: str
    project: str = "default"
    status: int = 200
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"audit result must be one of {RESULTS}, got {self.result!r}")

    def data(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = self.time.isoformat()
        return out

    def to_event(self) -> CloudEvent:
        return new_event(
            AUDIT_TYPE, "/kawa/portal", self.data(), subject=self.resource, id=self.request_id, time=self.time
        )

    @classmethod
    def from_event(cls, event: CloudEvent) -> AuditRecord:
        raw = event.get_data()
        if not isinstance(raw, dict):
            raise ValueError("audit event data must be a JSON object")
        data = dict(raw)
        data["time"] = datetime.fromisoformat(str(data["time"]))
        return cls(**data)
