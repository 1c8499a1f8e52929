"""``fetch`` step: load the objects that a bucket notification points to.

The body may be anything :func:`kawa.store.parse_records` reads (an S3 event envelope or record from Ceph,
MinIO, AWS or Kawa's own store, a CloudEvent carrying one, a Knative KafkaSource delivery). One message per
``ObjectCreated`` record comes out, its body the object's bytes, with headers ``bucket``, ``key``,
``content-type``, ``etag``, ``size`` and ``filename``. Removal events and objects deleted since are
skipped; ``s3:TestEvent`` yields nothing. Option ``bucket``: only events of that bucket.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import EventError, MessageRejected, ObjectNotFound
from kawa.routes.message import Message

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext

log = logging.getLogger("kawa.routes")


class Fetch:
    def __init__(self, options: Any, ctx: RouteContext) -> None:
        opts = dict(options) if isinstance(options, Mapping) else {}
        self.only_bucket = opts.get("bucket")
        self.ctx = ctx

    def process(self, message: Message) -> list[Message]:
        from kawa.store import parse_records

        try:
            events = parse_records(message.body)
        except EventError as exc:
            raise MessageRejected(f"fetch: not a bucket notification: {exc}") from exc
        out: list[Message] = []
        created = [e for e in events if e.is_created and (not self.only_bucket or e.bucket == self.only_bucket)]
        for number, event in enumerate(created):
            try:
                with self.ctx.store.get(event.bucket, event.key) as reader:
                    data = reader.read()
                    info = reader.info
            except ObjectNotFound:
                log.info("fetch: %s/%s is gone (deleted after its notification); skipped", event.bucket, event.key)
                continue
            headers = {
                "bucket": event.bucket, "key": event.key, "filename": posixpath.basename(event.key),
                "content-type": info.content_type or "application/octet-stream", "etag": info.etag,
                "size": info.size, "event-name": event.event_name,
            }  # fmt: skip
            suffix = None if len(created) == 1 else str(number)
            out.append(message.derive(data, suffix=suffix, headers=headers))
        return out
