"""Kawa's events: CloudEvent helpers, the one event identity, the S3 envelope parser and the typed schemas.

- :mod:`kawa.events.cloudevents` — build, encode (Kafka binary mode) and decode CloudEvents 1.0;
- :mod:`kawa.events.ref` — :class:`EventRef`, the ``source`` + ``id`` identity every join uses;
- :mod:`kawa.events.s3` — every bucket-notification shape (Ceph, MinIO, AWS, SNS, KafkaSource) read by one parser;
- :mod:`kawa.events.schemas` — pydantic schemas of the event types the platform emits.

The names below are imported on first use: the CloudEvents SDK and pydantic load only when an event is handled.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "CloudEvent": "kawa.events.cloudevents",
    "new_event": "kawa.events.cloudevents",
    "to_kafka": "kawa.events.cloudevents",
    "from_record": "kawa.events.cloudevents",
    "from_kafka": "kawa.events.cloudevents",
    "is_cloudevent": "kawa.events.cloudevents",
    "event_key": "kawa.events.cloudevents",
    "EventRef": "kawa.events.ref",
    "S3Record": "kawa.events.schemas",
    "parse_records": "kawa.events.s3",
}

if TYPE_CHECKING:  # the "X as X" form re-exports each name for type checkers
    from kawa.events.cloudevents import CloudEvent as CloudEvent
    from kawa.events.cloudevents import event_key as event_key
    from kawa.events.cloudevents import from_kafka as from_kafka
    from kawa.events.cloudevents import from_record as from_record
    from kawa.events.cloudevents import is_cloudevent as is_cloudevent
    from kawa.events.cloudevents import new_event as new_event
    from kawa.events.cloudevents import to_kafka as to_kafka
    from kawa.events.ref import EventRef as EventRef
    from kawa.events.s3 import parse_records as parse_records
    from kawa.events.schemas import S3Record as S3Record

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa.events' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
