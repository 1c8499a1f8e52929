"""The object store: buckets of objects, and notifications of their changes on the event log.

``open_store(uri)`` builds the backend a URI names: ``file:`` (``<home>/buckets``) or a directory path for
the local backend, ``s3://[bucket-prefix]`` for S3 (AWS, Ceph RGW, MinIO), ``memory:`` for the in-memory
test double. See ``docs/store.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kawa.events.s3 import S3Record, parse_records
from kawa.plugins import SchemeRegistry
from kawa.store.base import (
    Body,
    BucketInfo,
    ObjectInfo,
    ObjectPage,
    ObjectReader,
    ObjectStore,
    iter_objects,
)
from kawa.store.parse import SequencerTracker, order_events, sequencer_value
from kawa.store.rules import NotificationRule

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.log.base import EventLog

__all__ = [
    "Body",
    "BucketInfo",
    "NotificationRule",
    "ObjectInfo",
    "ObjectPage",
    "ObjectReader",
    "ObjectStore",
    "S3Record",
    "SequencerTracker",
    "iter_objects",
    "open_store",
    "order_events",
    "parse_records",
    "sequencer_value",
    "store_backends",
]

store_backends: SchemeRegistry[ObjectStore] = SchemeRegistry("object store")
store_backends.register("file", "kawa.store.local:build")
store_backends.register("local", "kawa.store.local:build")
store_backends.register("", "kawa.store.local:build")
store_backends.register("s3", "kawa.store.s3:build")
store_backends.register("memory", "kawa.store.memory:build")


def open_store(
    uri: str | None = None, config: KawaConfig | None = None, log: EventLog | None = None, **kwargs: Any
) -> ObjectStore:
    """Open the object store at ``uri`` (default: the configured one).

    ``log`` is where notifications are published; when omitted, the configured log is opened the first
    time a notification must be published.
    """
    if config is None:
        from kawa.config import load_config

        config = load_config()
    return store_backends.build(uri or config.store.uri, config=config, log=log, **kwargs)
