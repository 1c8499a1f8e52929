"""The event log: topics, partitions, producers, consumer groups.

``open_log(uri)`` builds the backend a URI names: ``embedded:`` or a directory path for the on-disk log,
``kafka://host:port[,host:port]`` for Apache Kafka, ``memory:`` for the in-memory test double.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kawa.log.base import (
    Consumer,
    EventLog,
    PartitionInfo,
    PartitionLag,
    Producer,
    Record,
    RecordMetadata,
    TopicInfo,
    TopicPartition,
    TopicSpec,
)
from kawa.plugins import SchemeRegistry

if TYPE_CHECKING:
    from kawa.config import KawaConfig

__all__ = [
    "Consumer",
    "EventLog",
    "PartitionInfo",
    "PartitionLag",
    "Producer",
    "Record",
    "RecordMetadata",
    "TopicInfo",
    "TopicPartition",
    "TopicSpec",
    "log_backends",
    "open_log",
]

log_backends: SchemeRegistry[EventLog] = SchemeRegistry("event log")
log_backends.register("embedded", "kawa.log.embedded:build")
log_backends.register("file", "kawa.log.embedded:build")
log_backends.register("", "kawa.log.embedded:build")
log_backends.register("kafka", "kawa.log.kafka:build")
log_backends.register("memory", "kawa.log.memory:build")


def open_log(uri: str | None = None, config: KawaConfig | None = None, **kwargs: Any) -> EventLog:
    """Open the event log at ``uri`` (default: the configured one)."""
    if config is None:
        from kawa.config import load_config

        config = load_config()
    return log_backends.build(uri or config.log.uri, config=config, **kwargs)
