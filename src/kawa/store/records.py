"""S3 event records (the Ceph/AWS layout) and publishing them to the log; their CloudEvent wrapping and parsing
are :mod:`kawa.events.s3`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kawa.errors import NotificationError, NotificationPending, ProducerError, TopicNotFound
from kawa.events.cloudevents import to_kafka
from kawa.events.s3 import EVENT_SOURCE, record_event_id, record_key, to_cloudevent

if TYPE_CHECKING:
    from pathlib import Path

    from kawa.log.base import EventLog, Producer
    from kawa.store.outbox import Outbox, OutboxRelay, Pending
    from kawa.store.rules import NotificationRule, RuleRegistry

_log = logging.getLogger("kawa.store.notify")
__all__ = ["EVENT_SOURCE", "Notifier", "event_id", "event_time", "make_record", "record_key", "to_cloudevent"]
event_id = record_event_id  # the record's deterministic CloudEvent id (the format lives in kawa.events.s3)


def event_time(when: datetime | None = None) -> str:
    """ISO-8601 with milliseconds and ``Z``, as S3 writes ``eventTime``."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def make_record(
    event_name: str,
    bucket: str,
    key: str,
    *,
    size: int | None,
    etag: str | None,
    sequencer: str | None,
    region: str,
    configuration_id: str,
    metadata: Mapping[str, str] | None = None,
    version_id: str | None = None,
    when: datetime | None = None,
    event_source: str = EVENT_SOURCE,
) -> dict[str, Any]:
    """One S3 event record in the layout Ceph RGW and AWS emit (``eventName`` without ``s3:``, as Ceph).

    The key is not URL-encoded (as Ceph); ``metadata`` is Ceph's list of ``{"key", "val"}`` pairs.
    """
    obj: dict[str, Any] = {"key": key}
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    if version_id is not None:
        obj["versionId"] = version_id
    if sequencer is not None:
        obj["sequencer"] = sequencer
    if metadata:
        obj["metadata"] = [{"key": f"x-amz-meta-{k}", "val": v} for k, v in metadata.items()]
    return {
        "eventVersion": "2.1",
        "eventSource": event_source,
        "awsRegion": region,
        "eventTime": event_time(when),
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }


class Notifier:
    """Publishes S3 event records to topics of the event log (creating a topic that is missing).

    Each record goes out as a CloudEvent in the Kafka binary mode with the record key ``bucket/key``, so
    the events of one object stay in order on one partition. ``publish`` returns once the log acknowledged.
    With an ``outbox`` (see :mod:`kawa.store.outbox`), :meth:`notify` keeps a record the log does not take
    within ``publish_timeout_s`` and raises :class:`~kawa.errors.NotificationPending`; the outbox's relay
    publishes it when the log is back.
    """

    def __init__(
        self,
        registry: RuleRegistry,
        log: Callable[[], EventLog],
        region: str,
        *,
        outbox: Path | None = None,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.registry = registry
        self.region = region
        self.publish_timeout_s = publish_timeout_s
        self._log_provider = log
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._topics: set[str] = set()
        self.outbox: Outbox | None = None
        self.relay: OutboxRelay | None = None
        if outbox is not None:
            from kawa.store.outbox import Outbox, OutboxRelay

            self.outbox = Outbox(outbox)
            self.relay = OutboxRelay(self.outbox, self._publish_pending)
            if self.outbox.count():
                self.relay.kick()  # left by an earlier run: publish it now

    def rules_for(self, bucket: str, event_name: str, key: str) -> list[NotificationRule]:
        return self.registry.matching(bucket, event_name, key)

    def notify(
        self,
        rules: list[NotificationRule],
        event_name: str,
        bucket: str,
        key: str,
        **fields: Any,
    ) -> int:
        """Build one record per rule and publish it; returns how many were published. Records the log did
        not take wait in the outbox (:class:`~kawa.errors.NotificationPending` once all rules were tried)."""
        pending: list[str] = []
        for rule in rules:
            record = make_record(event_name, bucket, key, region=self.region, configuration_id=rule.id, **fields)
            try:
                self.publish(rule.topic, record)
            except NotificationError as exc:
                if self.outbox is None:
                    raise
                self._keep(rule.topic, record)
                pending.append(f"{rule.topic} ({exc})")
        if pending:
            raise NotificationPending(
                f"the notification of {bucket}/{key} to {', '.join(pending)} waits in the outbox; it is "
                "published as soon as the event log takes it"
            )
        return len(rules)

    def _encode(self, record: Mapping[str, Any]) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
        event = to_cloudevent(record)
        _, value, headers = to_kafka(event)
        partition_key = f"{record['s3']['bucket']['name']}/{record_key(record)}".encode()
        return partition_key, value, headers

    def publish(self, topic: str, record: Mapping[str, Any]) -> None:
        """Publish one record and wait for the log's acknowledgement (at most ``publish_timeout_s``)."""
        key, value, headers = self._encode(record)
        try:
            self._send(topic, key, value, headers)
        except TopicNotFound:
            self._topics.discard(topic)  # deleted since we created it: create again, once
            try:
                self._send(topic, key, value, headers)
            except Exception as exc:
                raise NotificationError(f"could not publish the notification to topic {topic!r}: {exc}") from exc
        except Exception as exc:
            raise NotificationError(f"could not publish the notification to topic {topic!r}: {exc}") from exc

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        producer = self._ensure(topic)
        errors: list[Exception] = []
        producer.produce(topic, value, key=key, headers=headers,
                         on_delivery=lambda _md, error: errors.append(error) if error is not None else None)
        producer.flush(self.publish_timeout_s)
        if errors:
            raise errors[0]

    def _keep(self, topic: str, record: Mapping[str, Any]) -> None:
        assert self.outbox is not None and self.relay is not None
        key, value, headers = self._encode(record)
        self.outbox.add(topic, key, value, headers)
        self.relay.kick()

    def _publish_pending(self, pending: Pending) -> None:
        try:
            self._send(pending.topic, pending.key, pending.value, list(pending.headers))
        except TopicNotFound:
            self._topics.discard(pending.topic)
            raise

    def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` (one partition) if it does not exist yet, so consumers can subscribe at once."""
        self._ensure(topic)

    def _ensure(self, topic: str) -> Producer:
        from kawa.log.base import TopicSpec

        with self._lock:
            log = self._log_provider()
            if topic not in self._topics:
                log.create_topic(TopicSpec(topic), exist_ok=True)
                self._topics.add(topic)
            if self._producer is None:
                self._producer = log.producer()
            return self._producer

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        with self._lock:
            if self._producer is not None:
                try:
                    # Bounded like a publish: what the log has not acknowledged is in the outbox already.
                    self._producer.close(timeout=self.publish_timeout_s)
                except ProducerError as exc:
                    # Every notification the log did not acknowledge is in the outbox (publish() raised for it),
                    # so nothing is lost with this producer: the next relay publishes it.
                    _log.info("closing the notifier before the log acknowledged everything (%s); the outbox "
                              "keeps those notifications", exc)
                finally:
                    self._producer = None
        if self.outbox is not None:
            self.outbox.close()
