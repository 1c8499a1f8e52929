"""Bridges that move S3 notifications onto the event log: from an SQS queue, or by polling a bucket.

Both are at-least-once: the SQS bridge deletes a message only after the log acknowledged every record in
it (a crash before that leaves the message to reappear after its visibility timeout); the polling bridge
remembers an object's version only after its event was acknowledged. CloudEvent ids are derived from the
record (:func:`kawa.events.s3.record_event_id`), so a redelivered record can be deduplicated downstream.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.errors import EventError, KawaError, NotificationPending
from kawa.events.s3 import parse_records, raw_records
from kawa.store.base import ObjectInfo, iter_objects
from kawa.store.rules import NotificationRule, topic_from_rule_id
from kawa.store.tracker import DELETE, PUT, next_sequencer

if TYPE_CHECKING:
    from kawa.store.s3_types import S3Backend

log = logging.getLogger("kawa.store.bridge")
VISIBILITY_TIMEOUT_S = 30


class SqsBridge:
    """Long-polls one SQS queue and publishes each S3 record to the topic of the rule that produced it.

    A record is routed by its ``configurationId`` (the Kawa rule id); the rule's filters are applied again
    here, which is how a ``regex`` filter works on AWS. ``s3:TestEvent`` messages are dropped.
    """

    def __init__(self, store: S3Backend, queue_url: str) -> None:
        self.store = store
        self.queue_url = queue_url
        self.sqs = store.service_client("sqs")

    def run_once(self, wait_s: int = 1) -> int:
        """Receive one batch and handle it; returns the number of events published."""
        with self.store.errors("receive from SQS"):
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=VISIBILITY_TIMEOUT_S,
            )
        published = 0
        for message in response.get("Messages", []):
            try:
                records = raw_records(message["Body"])
            except EventError as exc:
                log.error("dropping SQS message %s: not an S3 notification: %s", message.get("MessageId"), exc)
                records = []
            for record in records:
                for rule in self.rules_for(record):
                    self.store.notifier.publish(rule.topic, record)
                    published += 1
            with self.store.errors("delete SQS message"):
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return published

    def rules_for(self, record: dict[str, Any]) -> list[NotificationRule]:
        event = parse_records(record)[0]
        rule_id = event.configuration_id or ""
        rules = [r for r in self.store.registry.rules() if r.id == rule_id]
        if not rules:
            topic = topic_from_rule_id(rule_id)
            if topic is None:
                log.warning("record of %s/%s from configuration %r that Kawa did not make: dropped",
                            event.bucket, event.key, rule_id)
                return []
            # A rule made by another Kawa installation on the same queue: its id names the topic.
            return [NotificationRule(bucket=self.store.logical(event.bucket), topic=topic, id=rule_id)]
        return [r for r in rules if r.matches(event.event_name, event.key)]

    def run(self, stop: threading.Event, wait_s: int) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                self.run_once(wait_s)
                backoff = 0.5
            except KawaError as exc:
                log.warning("SQS bridge for %s: %s (retrying in %.1fs)", self.queue_url, exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)


class PollState:
    """What the polling bridge has already reported, per bucket (SQLite under the Kawa home)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (bucket TEXT, key TEXT, etag TEXT, size INTEGER, "
            "PRIMARY KEY (bucket, key)) WITHOUT ROWID"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS baselined (bucket TEXT PRIMARY KEY)")

    def is_baselined(self, bucket: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM baselined WHERE bucket=?", (bucket,)).fetchone() is not None

    def baseline(self, store: S3Backend, bucket: str) -> None:
        """Remember every object now in ``bucket`` without reporting it."""
        objects = list(iter_objects(store, bucket))
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM seen WHERE bucket=?", (bucket,))
            self._db.executemany("INSERT INTO seen VALUES (?,?,?,?)",
                                 [(bucket, o.key, o.etag, o.size) for o in objects])
            self._db.execute("INSERT OR REPLACE INTO baselined VALUES (?)", (bucket,))
            self._db.execute("COMMIT")

    def known(self, bucket: str) -> dict[str, tuple[str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT key, etag, size FROM seen WHERE bucket=?", (bucket,)).fetchall()
        return {key: (etag, size) for key, etag, size in rows}

    def remember(self, bucket: str, info: ObjectInfo) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO seen VALUES (?,?,?,?)", (bucket, info.key, info.etag, info.size))

    def forget(self, bucket: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM seen WHERE bucket=? AND key=?", (bucket, key))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PollBridge:
    """Lists each bucket that has ``poll`` rules and publishes created, changed and removed objects."""

    def __init__(self, store: S3Backend, state: PollState) -> None:
        self.store = store
        self.state = state

    def run_once(self) -> int:
        published = 0
        buckets = sorted({r.bucket for r in self.store.registry.rules() if r.mode == "poll"})
        for bucket in buckets:
            if not self.state.is_baselined(bucket):
                self.state.baseline(self.store, bucket)
                continue
            known = self.state.known(bucket)
            present: set[str] = set()
            for info in iter_objects(self.store, bucket):
                present.add(info.key)
                if known.get(info.key) == (info.etag, info.size):
                    continue
                modified = info.last_modified
                sequencer = f"{int(modified.timestamp() * 1e9):016X}" if modified else next_sequencer()
                published += self._notify(PUT, bucket, info.key, size=info.size, etag=info.etag, sequencer=sequencer)
                self.state.remember(bucket, info)
            for key in set(known) - present:
                published += self._notify(DELETE, bucket, key, size=None, etag=None, sequencer=next_sequencer())
                self.state.forget(bucket, key)
        return published

    def _notify(self, event: str, bucket: str, key: str, **fields: Any) -> int:
        notifier = self.store.notifier
        rules = [r for r in notifier.rules_for(bucket, event, key) if r.mode == "poll"]
        try:
            return notifier.notify(rules, event, self.store.physical(bucket), key, **fields)
        except NotificationPending as exc:
            log.info("polling bridge: %s", exc)  # the outbox publishes it: the change counts as seen
            return 0

    def run(self, stop: threading.Event, interval_s: float) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except KawaError as exc:
                log.warning("polling bridge: %s", exc)
            stop.wait(interval_s)
