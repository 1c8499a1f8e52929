"""The X-ray app's event schemas: what ``risk-assessment`` emits on ``xray-results``.

``dev.kawa.xray.assessed`` (:class:`XrayAssessed`) is the one shape of a result: the function builds it, the
results table stores it (:meth:`kawa.apps.xray.results.ResultRow.of`) and the portal's results tail reads it.
``event`` is the :class:`~kawa.events.EventRef` of the upload's notification, the identity that joins the
result with the function's dedupe state and the model's prediction record. Results emitted before the
EventRef have no ``event`` (their rows and predictions joined on less).
"""

from __future__ import annotations

from kawa.events.ref import EventRef
from kawa.events.schemas import EventSchema, register_schema

__all__ = ["ASSESSED_TYPE", "XrayAssessed", "image_entity"]

ASSESSED_TYPE = "dev.kawa.xray.assessed"


def image_entity(bucket: str, key: str) -> str:
    """The entity key of an uploaded image in decision records and radiologist reads: ``bucket/key``."""
    return f"{bucket}/{key}"


class XrayAssessed(EventSchema):
    """One assessed image. ``latency_ms``: inside the function (fetch → stored outputs); ``e2e_ms``: from the
    upload's notification time to the result (None when the notification had no time); ``time``: epoch s."""

    event: EventRef | None = None
    bucket: str
    key: str
    processed_bucket: str
    processed_key: str
    model: str
    model_version: int
    trained_on: str = "unknown"
    risk: float
    label: str
    latency_ms: float
    e2e_ms: float | None = None
    time: float


register_schema(ASSESSED_TYPE, XrayAssessed)
