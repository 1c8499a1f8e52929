"""The S3 backend (AWS, Ceph RGW, MinIO, moto) on boto3, imported only when an ``s3://`` store is opened.

``s3://`` uses bucket names as given; ``s3://acme-`` prefixes every bucket (``xray`` → ``acme-xray``) so
one S3 account can hold several Kawa installations. Endpoint, region, path-style addressing, credentials
and retry bounds come from :class:`~kawa.config.StoreConfig`. Streams are uploaded in parts of
``multipart_chunk_bytes`` with at most :data:`PARTS_IN_FLIGHT` parts in memory; ``get`` returns the HTTP
body as a stream. Notifications are produced by the server (see :mod:`kawa.store.s3_notify`); this
backend does not publish them itself, so nothing is published twice.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from kawa.errors import BucketExists, BucketNotFound, NotificationError, ObjectNotFound, StoreError
from kawa.store.base import Body, BucketInfo, ObjectInfo, ObjectPage, ObjectReader, iter_body
from kawa.store.naming import (
    default_content_type,
    normalize_metadata,
    normalize_tags,
    validate_bucket_name,
    validate_content_type,
    validate_key,
)
from kawa.store.records import Notifier
from kawa.store.rules import NotificationRule, RuleRegistry
from kawa.store.s3_errors import translate

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.log.base import EventLog

PARTS_IN_FLIGHT = 4
MAX_COPY_BYTES = 5 * 1024**3


class S3Store:
    """An :class:`~kawa.store.base.ObjectStore` on an S3 endpoint."""

    def __init__(self, uri: str, config: KawaConfig, log: EventLog | Callable[[], EventLog] | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.uri = uri
        self.config = config
        sc = config.store
        self.prefix = uri.split("://", 1)[1].strip("/") if "://" in uri else ""
        self.endpoint = sc.endpoint_url or f"https://s3.{sc.region}.amazonaws.com"
        self.region = sc.region
        self.chunk = sc.multipart_chunk_bytes
        self.boto_config = Config(
            region_name=sc.region,
            retries={"max_attempts": sc.max_attempts, "mode": "standard"},
            connect_timeout=sc.connect_timeout_s,
            read_timeout=sc.read_timeout_s,
            s3={"addressing_style": "path" if sc.path_style else "auto"},
            signature_version="s3v4",
            max_pool_connections=PARTS_IN_FLIGHT + 8,
        )
        self.session = boto3.session.Session(
            aws_access_key_id=sc.access_key_id,
            aws_secret_access_key=sc.secret_access_key.get_secret_value() if sc.secret_access_key else None,
            region_name=sc.region,
        )
        self.client: Any = self.session.client("s3", endpoint_url=sc.endpoint_url, config=self.boto_config)
        self.registry = RuleRegistry(config.path("store", "s3-notifications.json"))
        self._given_log = log
        self.notifier = Notifier(self.registry, self._log, sc.region, outbox=config.path("store", "s3-outbox.sqlite"),
                                 publish_timeout_s=sc.notify.publish_timeout_s)  # fmt: skip

    def _log(self) -> EventLog:
        if self._given_log is None:
            raise NotificationError(
                "this store was opened without an event log, so it cannot publish notifications; open it "
                "with kawa.backends.open_backends(config).store (or pass log=...)"
            )
        return self._given_log() if callable(self._given_log) else self._given_log

    def service_client(self, service: str) -> Any:
        """A boto3 client for another service (``sqs``, ``sns``) at the same endpoint and credentials."""
        client: Any = self.session.client(
            service, endpoint_url=self.config.store.endpoint_url, config=self.boto_config  # type: ignore[call-overload]
        )
        return client

    def physical(self, bucket: str) -> str:
        validate_bucket_name(bucket)
        return validate_bucket_name(self.prefix + bucket) if self.prefix else bucket

    def logical(self, physical: str) -> str:
        return physical[len(self.prefix) :] if self.prefix and physical.startswith(self.prefix) else physical

    @contextlib.contextmanager
    def errors(self, action: str, bucket: str | None = None, key: str | None = None) -> Iterator[None]:
        """Translate botocore errors raised inside the block into Kawa's error tree."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc, self, action, bucket, key) from exc

    # --- buckets ----------------------------------------------------------------------------------

    def create_bucket(self, name: str, *, exist_ok: bool = False) -> None:
        physical = self.physical(name)
        args: dict[str, Any] = {"Bucket": physical}
        if self.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        if not exist_ok and self.bucket_exists(name):
            raise BucketExists(f"bucket {name!r} already exists")
        try:
            with self.errors("create bucket", name):
                self.client.create_bucket(**args)
        except BucketExists:
            if not exist_ok:
                raise

    def list_buckets(self) -> list[BucketInfo]:
        with self.errors("list buckets"):
            response = self.client.list_buckets()
        out = []
        for item in response.get("Buckets", []):
            if item["Name"].startswith(self.prefix):
                out.append(BucketInfo(self.logical(item["Name"]), item.get("CreationDate")))
        return sorted(out, key=lambda b: b.name)

    def bucket_exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with self.errors("head bucket", name):
                self.client.head_bucket(Bucket=self.physical(name))
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and str(cause.response.get("Error", {}).get("Code")) in (
                "404", "NoSuchBucket", "NotFound",
            ):
                return False
            raise
        return True

    def delete_bucket(self, name: str) -> None:
        with self.errors("delete bucket", name):
            self.client.delete_bucket(Bucket=self.physical(name))

    # --- objects ----------------------------------------------------------------------------------

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
        extra: dict[str, Any] = {
            "Bucket": self.physical(bucket),
            "Key": key,
            "ContentType": validate_content_type(content_type) or default_content_type(key),
            "Metadata": normalize_metadata(metadata),
        }
        tag_map = normalize_tags(tags)
        if tag_map:
            extra["Tagging"] = urlencode(tag_map)
        parts = _rechunk(iter_body(body, self.chunk), self.chunk)
        first = next(parts, b"")
        second = next(parts, None)
        if second is None:  # fits in one request
            with self.errors("put", bucket, key):
                response = self.client.put_object(Body=first, **extra)
            return ObjectInfo(
                bucket, key, len(first), response["ETag"].strip('"'), extra["ContentType"], extra["Metadata"],
                _response_time(response), response.get("VersionId"),
            )
        ahead = [first, second]
        del first, second  # only the list holds them now, and _drain lets go of each once sent
        self._multipart(bucket, key, extra, _drain(ahead, parts))
        return self.head(bucket, key)

    def _multipart(self, bucket: str, key: str, extra: dict[str, Any], parts: Iterator[bytes]) -> None:
        with self.errors("start multipart upload", bucket, key):
            upload_id = self.client.create_multipart_upload(**extra)["UploadId"]
        target = {"Bucket": extra["Bucket"], "Key": key, "UploadId": upload_id}
        done: list[dict[str, Any]] = []
        in_flight: deque[Future[dict[str, Any]]] = deque()

        def upload(number: int, data: bytes) -> dict[str, Any]:
            with self.errors("upload part", bucket, key):
                result = self.client.upload_part(Body=data, PartNumber=number, **target)
            return {"PartNumber": number, "ETag": result["ETag"]}

        try:
            with ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="kawa-s3-part") as pool:
                for number, data in enumerate(parts, start=1):
                    if len(in_flight) >= PARTS_IN_FLIGHT:  # bound memory: wait for the oldest part
                        done.append(in_flight.popleft().result())
                    in_flight.append(pool.submit(upload, number, data))
                    del data
                while in_flight:
                    done.append(in_flight.popleft().result())
            with self.errors("complete multipart upload", bucket, key):
                self.client.complete_multipart_upload(MultipartUpload={"Parts": done}, **target)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(**target)
            raise

    def get(self, bucket: str, key: str) -> ObjectReader:
        validate_key(key)
        with self.errors("get", bucket, key):
            response = self.client.get_object(Bucket=self.physical(bucket), Key=key)
        return ObjectReader(_info_from_head(bucket, key, response), _Body(self, response["Body"], bucket, key))

    def head(self, bucket: str, key: str) -> ObjectInfo:
        validate_key(key)
        with self.errors("head", bucket, key):
            response = self.client.head_object(Bucket=self.physical(bucket), Key=key)
        return _info_from_head(bucket, key, response)

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        validate_key(key)
        with self.errors("get tags", bucket, key):
            response = self.client.get_object_tagging(Bucket=self.physical(bucket), Key=key)
        return {t["Key"]: t["Value"] for t in response.get("TagSet", [])}

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        start_after: str | None = None,
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        if not 1 <= max_keys <= 1000:
            raise StoreError(f"max_keys must be between 1 and 1000, got {max_keys}")
        args: dict[str, Any] = {"Bucket": self.physical(bucket), "Prefix": prefix, "MaxKeys": max_keys}
        if continuation_token:
            args["ContinuationToken"] = continuation_token
        if start_after:
            args["StartAfter"] = start_after
        with self.errors("list", bucket):
            response = self.client.list_objects_v2(**args)
        objects = tuple(
            ObjectInfo(bucket, item["Key"], int(item["Size"]), item["ETag"].strip('"'), None, {},
                       item.get("LastModified"))
            for item in response.get("Contents", [])
        )
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return ObjectPage(objects, token)

    def delete(self, bucket: str, key: str, *, missing_ok: bool = False) -> None:
        try:
            self.head(bucket, key)
        except ObjectNotFound:
            if missing_ok:
                return
            raise
        with self.errors("delete", bucket, key):
            self.client.delete_object(Bucket=self.physical(bucket), Key=key)

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
        src = self.head(src_bucket, src_key)
        source = {"Bucket": self.physical(src_bucket), "Key": src_key}
        args: dict[str, Any] = {"Bucket": self.physical(dst_bucket), "Key": dst_key}
        if metadata is not None:
            args.update(MetadataDirective="REPLACE", Metadata=normalize_metadata(metadata),
                        ContentType=src.content_type or default_content_type(dst_key))
        with self.errors("copy", dst_bucket, dst_key):
            if src.size <= MAX_COPY_BYTES:
                self.client.copy_object(CopySource=source, **args)
            else:
                extra = {k: v for k, v in args.items() if k not in ("Bucket", "Key")}
                self.client.copy(source, args["Bucket"], dst_key, ExtraArgs=extra or None)
        return self.head(dst_bucket, dst_key)

    # --- notifications ----------------------------------------------------------------------------

    def add_notification(self, rule: NotificationRule) -> NotificationRule:
        from kawa.store import s3_notify

        if not self.bucket_exists(rule.bucket):
            raise BucketNotFound(f"bucket {rule.bucket!r} does not exist; create it with `kawa buckets create`")
        stored = s3_notify.configure(self, rule)
        # With rgw pushing to Kafka the RGW writes to the topic itself; through the ingress, Kawa's log has it.
        if stored.mode != "rgw" or self.config.store.notify.ingress_url:
            self.notifier.ensure_topic(rule.topic)
        return self.registry.put(stored)

    def notifications(self, bucket: str) -> list[NotificationRule]:
        return self.registry.rules(validate_bucket_name(bucket))

    def remove_notification(self, bucket: str, rule_id: str) -> None:
        from kawa.store import s3_notify

        s3_notify.unconfigure(self, bucket, rule_id)
        self.registry.remove(bucket, rule_id)

    def close(self) -> None:
        self.notifier.close()


class _Body:
    """The HTTP body of a GET, with read errors translated."""

    def __init__(self, store: S3Store, raw: Any, bucket: str, key: str) -> None:
        self._store, self._raw, self._bucket, self._key = store, raw, bucket, key

    def read(self, size: int) -> bytes:
        with self._store.errors("read", self._bucket, self._key):
            data: bytes = self._raw.read(size)
        return data

    def close(self) -> None:
        self._raw.close()


def _info_from_head(bucket: str, key: str, response: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        bucket, key, int(response["ContentLength"]), str(response.get("ETag", "")).strip('"'),
        response.get("ContentType"), dict(response.get("Metadata") or {}), response.get("LastModified"),
        response.get("VersionId"),
    )


def _response_time(response: Mapping[str, Any]) -> datetime | None:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date).astimezone(UTC) if date else None
    except (TypeError, ValueError):
        return None


def _rechunk(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Chunks of exactly ``size`` bytes (the last may be shorter): S3 parts must be >= 5 MiB but the last."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            with memoryview(buffer) as view:
                part = bytes(view[:size])  # one copy, no intermediate slice
            del buffer[:size]
            yield part
    if buffer:
        yield bytes(buffer)


def _drain(ahead: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    while ahead:
        yield ahead.pop(0)
    yield from rest


def build(uri: str, config: KawaConfig, log: EventLog | None = None, **_: Any) -> S3Store:
    return S3Store(uri, config, log)
