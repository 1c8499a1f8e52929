"""Reading a consumer group's committed offsets without joining it, and without the admin client.

librdkafka's admin ``ListConsumerGroupOffsets`` crashes the process (SIGSEGV on librdkafka's own thread) when
the group coordinator answers ``NOT_COORDINATOR``, as a fresh broker does while it loads
``__consumer_offsets``: the admin client has no consumer-group handle, and the response handler asks that
missing handle to look the coordinator up again (librdkafka#5040, confluent-kafka-python#1982). A consumer
handle with the group's ``group.id`` has one, and ``committed()`` retries the lookup properly; it never
subscribes, so the group never sees a new member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import TopicPartition as _RdTopicPartition

from kawa.log.base import TopicPartition

if TYPE_CHECKING:
    from kawa.log.kafka.log import KafkaLog


def committed_offsets(log: KafkaLog, group: str, counts: Mapping[str, int]) -> dict[TopicPartition, int | None]:
    """The committed offset of ``group`` on every partition of the topics in ``counts`` (topic → partition
    count); None where it committed nothing."""
    request = [_RdTopicPartition(topic, p) for topic, count in sorted(counts.items()) for p in range(count)]
    if not request:
        return {}
    reader = _RdConsumer(
        log.client_conf(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "error_cb": log.health.error_callback(log.health.client_name(f"offset reader of group {group!r}")),
            }
        )
    )
    try:
        result = log.call(
            f"reading offsets of group {group!r}", None, lambda: reader.committed(request, timeout=log.timeout_s)
        )
    finally:
        reader.close()
    return {TopicPartition(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in result}
