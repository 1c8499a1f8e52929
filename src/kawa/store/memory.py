"""The in-memory object store: a supported test double for code that uses :class:`ObjectStore`.

It behaves like the other backends (naming rules, errors, listing order, ETags, notifications published to
the event log it is given), except that it keeps objects in memory, so it holds each object's bytes once.
Use it in your own tests with the in-memory log::

    from kawa.log import open_log
    from kawa.store import open_store
    log = open_log("memory:")
    store = open_store("memory:", log=log)
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kawa.errors import BucketExists, BucketNotEmpty, BucketNotFound, NotificationError, ObjectNotFound
from kawa.store.base import Body, BucketInfo, ObjectInfo, ObjectPage, ObjectReader, iter_body
from kawa.store.naming import (
    default_content_type,
    normalize_metadata,
    normalize_tags,
    validate_bucket_name,
    validate_content_type,
    validate_key,
)
from kawa.store.paging import select_page
from kawa.store.records import Notifier
from kawa.store.rules import NotificationRule, RuleRegistry
from kawa.store.tracker import COPY, DELETE, PUT, next_sequencer

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.log.base import EventLog


@dataclass
class _Bucket:
    created: datetime
    objects: dict[str, tuple[bytes, ObjectInfo, dict[str, str]]] = field(default_factory=dict)


class MemoryStore:
    """An :class:`~kawa.store.base.ObjectStore` in a dict. Thread-safe."""

    def __init__(self, log: EventLog | None = None, region: str = "us-east-1") -> None:
        self.uri = "memory:"
        self._lock = threading.RLock()
        self._buckets: dict[str, _Bucket] = {}
        self._log = log
        self.registry = RuleRegistry(None)
        self.notifier = Notifier(self.registry, self._require_log, region)

    def _require_log(self) -> EventLog:
        if self._log is None:
            raise NotificationError("this memory store has no event log; open it with open_store('memory:', log=...)")
        return self._log

    def _bucket(self, name: str) -> _Bucket:
        try:
            return self._buckets[validate_bucket_name(name)]
        except KeyError:
            raise BucketNotFound(f"bucket {name!r} does not exist; create it first") from None

    def create_bucket(self, name: str, *, exist_ok: bool = False) -> None:
        with self._lock:
            if validate_bucket_name(name) in self._buckets:
                if not exist_ok:
                    raise BucketExists(f"bucket {name!r} already exists")
                return
            self._buckets[name] = _Bucket(datetime.now(UTC))

    def list_buckets(self) -> list[BucketInfo]:
        with self._lock:
            return [BucketInfo(n, b.created) for n, b in sorted(self._buckets.items())]

    def bucket_exists(self, name: str) -> bool:
        with self._lock:
            return validate_bucket_name(name) in self._buckets

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            if self._bucket(name).objects:
                raise BucketNotEmpty(f"bucket {name!r} is not empty; delete its objects first")
            del self._buckets[name]

    def put(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        content_type = validate_content_type(content_type) or default_content_type(key)
        meta, tag_map = normalize_metadata(metadata), normalize_tags(tags)
        with self._lock:
            self._bucket(bucket)
        buffer = io.BytesIO()
        for chunk in iter_body(body):
            buffer.write(chunk)
        return self._store(bucket, key, buffer.getvalue(), content_type, meta, tag_map, PUT)

    def _store(
        self, bucket: str, key: str, data: bytes, content_type: str | None, meta: dict[str, str],
        tags: dict[str, str], event: str,
    ) -> ObjectInfo:
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        with self._lock:
            info = ObjectInfo(bucket, key, len(data), etag, content_type, meta, datetime.now(UTC), None,
                              next_sequencer())
            self._bucket(bucket).objects[key] = (data, info, tags)
            rules = self.notifier.rules_for(bucket, event, key)
        self.notifier.notify(rules, event, bucket, key, size=info.size, etag=etag, sequencer=info.sequencer,
                             metadata=meta)
        return info

    def _entry(self, bucket: str, key: str) -> tuple[bytes, ObjectInfo, dict[str, str]]:
        validate_key(key)
        with self._lock:
            try:
                return self._bucket(bucket).objects[key]
            except KeyError:
                raise ObjectNotFound(f"object {key!r} not found in bucket {bucket!r}") from None

    def get(self, bucket: str, key: str) -> ObjectReader:
        data, info, _ = self._entry(bucket, key)
        return ObjectReader(info, io.BytesIO(data))

    def head(self, bucket: str, key: str) -> ObjectInfo:
        return self._entry(bucket, key)[1]

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        return dict(self._entry(bucket, key)[2])

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        start_after: str | None = None,
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        with self._lock:
            objects = self._bucket(bucket).objects
            page, token = select_page(list(objects), prefix=prefix, start_after=start_after,
                                      continuation_token=continuation_token, max_keys=max_keys)
            infos = tuple(objects[k][1] for k in page)
        return ObjectPage(infos, token)

    def delete(self, bucket: str, key: str, *, missing_ok: bool = False) -> None:
        validate_key(key)
        with self._lock:
            objects = self._bucket(bucket).objects
            if key not in objects:
                if missing_ok:
                    return
                raise ObjectNotFound(f"object {key!r} not found in bucket {bucket!r}")
            del objects[key]
            rules = self.notifier.rules_for(bucket, DELETE, key)
        self.notifier.notify(rules, DELETE, bucket, key, size=None, etag=None, sequencer=next_sequencer())

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        validate_key(dst_key)
        data, info, tags = self._entry(src_bucket, src_key)
        meta = normalize_metadata(metadata) if metadata is not None else dict(info.metadata)
        return self._store(dst_bucket, dst_key, data, info.content_type, meta, dict(tags), COPY)

    def add_notification(self, rule: NotificationRule) -> NotificationRule:
        with self._lock:
            self._bucket(rule.bucket)
        self.notifier.ensure_topic(rule.topic)
        return self.registry.put(replace(rule, mode="memory"))

    def notifications(self, bucket: str) -> list[NotificationRule]:
        return self.registry.rules(validate_bucket_name(bucket))

    def remove_notification(self, bucket: str, rule_id: str) -> None:
        self.registry.remove(bucket, rule_id)

    def close(self) -> None:
        self.notifier.close()


def build(uri: str, config: KawaConfig | None = None, log: EventLog | None = None, **_: Any) -> MemoryStore:
    return MemoryStore(log=log, region=config.store.region if config is not None else "us-east-1")
