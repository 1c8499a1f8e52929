"""``fetch`` step: load the objects that a bucket notification points to.

The body may be anything :func:`kawa.store.parse_records` reads (an S3 event envelope or record from Ceph,
MinIO, AWS or Kawa's own store, a CloudEvent carrying one, a Knative KafkaSource delivery). One message per
``ObjectCreated`` record comes out, its body the object's bytes, with headers ``bucket``, ``key``,
``content-type``, ``etag``, ``size`` and ``filename``; a notification of several records gives one message
per record, ids ``<id>#<index>`` (the record's index in the notification). Removal events and objects that
no longer exist are skipped; ``s3:TestEvent`` yields nothing.

Option ``bucket`` (a name or a list): act only on records of those buckets. A record of another bucket (a
Ceph topic may carry several buckets' notifications, the route's own output bucket among them) is never
fetched: it is skipped and counted (``skipped_foreign``, logged at most once a minute per bucket), or
dead-lettered with ``on-foreign: dead-letter``.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.deadletter import FOREIGN_BUCKET
from kawa.errors import EventError, InvalidRoute, MessageRejected, ObjectNotFound
from kawa.routes.message import Message

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext

log = logging.getLogger("kawa.routes")


class Fetch:
    def __init__(self, options: Any, ctx: RouteContext) -> None:
        from kawa.store.parse import ON_FOREIGN, BucketScope

        opts = dict(options) if isinstance(options, Mapping) else {}
        unknown = sorted(set(opts) - {"bucket", "on-foreign"})
        if unknown:
            raise InvalidRoute(f"fetch: unknown options {unknown}; use bucket, on-foreign")
        buckets = opts.get("bucket") or ()
        buckets = [buckets] if isinstance(buckets, str) else list(buckets)
        on_foreign = str(opts.get("on-foreign", "skip"))
        if on_foreign not in ON_FOREIGN or not all(isinstance(b, str) and b for b in buckets):
            raise InvalidRoute(
                "fetch: bucket must be a bucket name or a list of them, and on-foreign 'skip' or 'dead-letter'"
            )
        self.scope = BucketScope(buckets, on_foreign)
        self.ctx = ctx

    def process(self, message: Message) -> list[Message]:
        from kawa.store import parse_records

        try:
            events = parse_records(message.body)
        except EventError as exc:
            raise MessageRejected(f"fetch: not a bucket notification: {exc}") from exc
        out: list[Message] = []
        several = len(events) > 1
        for number, event in enumerate(events):
            suffix = str(number) if several else None
            if self.scope.is_foreign(event):
                self.ctx.count("skipped_foreign")
                self.scope.note(log, f"route {self.ctx.route_id}", event)
                if self.scope.dead_letters:
                    foreign = message.derive(suffix=suffix, headers={"bucket": event.bucket})
                    foreign.error, foreign.error_reason = f"not acted on: {self.scope.reason(event)}", FOREIGN_BUCKET
                    out.append(foreign)
                continue
            if not event.is_created:
                continue
            try:
                with self.ctx.store.get(event.bucket, event.key) as reader:
                    data = reader.read()
                    info = reader.info
            except ObjectNotFound:
                log.info("fetch: object %s/%s no longer exists; skipped", event.bucket, event.key)
                continue
            headers = {
                "bucket": event.bucket, "key": event.key, "filename": posixpath.basename(event.key),
                "content-type": info.content_type or "application/octet-stream", "etag": info.etag,
                "size": info.size, "event-name": event.event_name,
            }  # fmt: skip
            out.append(message.derive(data, suffix=suffix, headers=headers))
        return out
