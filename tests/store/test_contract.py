"""The ObjectStore contract, once, over every backend: local directory, in-memory double, S3 on moto_server."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest

from kawa.errors import (
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    InvalidBucketName,
    InvalidKey,
    InvalidMetadata,
    NotificationError,
    ObjectNotFound,
)
from kawa.store import NotificationRule, ObjectStore, iter_objects

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read_all(store: ObjectStore, bucket: str, key: str) -> bytes:
    with store.get(bucket, key) as reader:
        return b"".join(reader.iter_chunks(3))


# --- buckets --------------------------------------------------------------------------------------


def test_bucket_lifecycle(store: ObjectStore) -> None:
    name = f"life-{uuid.uuid4().hex[:10]}"
    assert not store.bucket_exists(name)
    store.create_bucket(name)
    assert store.bucket_exists(name)
    assert name in [b.name for b in store.list_buckets()]
    with pytest.raises(BucketExists, match="already exists"):
        store.create_bucket(name)
    store.create_bucket(name, exist_ok=True)
    store.put(name, "k", b"x")
    with pytest.raises(BucketNotEmpty, match="not empty"):
        store.delete_bucket(name)
    store.delete(name, "k")
    store.delete_bucket(name)
    assert not store.bucket_exists(name)
    with pytest.raises(BucketNotFound):
        store.delete_bucket(name)


def test_list_buckets_is_sorted(store: ObjectStore) -> None:
    stem = uuid.uuid4().hex[:8]
    for suffix in ("c", "a", "b"):
        store.create_bucket(f"sort-{stem}-{suffix}")
    names = [b.name for b in store.list_buckets() if b.name.startswith(f"sort-{stem}")]
    assert names == [f"sort-{stem}-a", f"sort-{stem}-b", f"sort-{stem}-c"]


@pytest.mark.parametrize(
    "name", ["ab", "a" * 64, "Upper", "under_score", "-start", "end-", "two..dots", "192.168.1.1", "xn--abc", "sp ace"]
)
def test_bad_bucket_names_are_refused(store: ObjectStore, name: str) -> None:
    with pytest.raises(InvalidBucketName, match="invalid bucket name"):
        store.create_bucket(name)


def test_missing_bucket(store: ObjectStore) -> None:
    name = f"missing-{uuid.uuid4().hex[:10]}"
    with pytest.raises(BucketNotFound, match="does not exist"):
        store.put(name, "k", b"x")
    with pytest.raises(BucketNotFound):
        store.head(name, "k")
    with pytest.raises(BucketNotFound):
        store.get(name, "k")
    with pytest.raises(BucketNotFound):
        store.list_objects(name)


# --- objects --------------------------------------------------------------------------------------


def test_put_bytes_then_head_get(store: ObjectStore, bucket: str) -> None:
    data = b"hello, x-ray"
    info = store.put(bucket, "scans/one.dcm", data, metadata={"Patient-Id": "p1"})
    assert (info.bucket, info.key, info.size, info.etag) == (bucket, "scans/one.dcm", len(data), md5(data))
    assert info.content_type == "application/dicom"
    assert dict(info.metadata) == {"patient-id": "p1"}
    head = store.head(bucket, "scans/one.dcm")
    assert (head.size, head.etag, head.content_type, dict(head.metadata)) == (
        len(data), md5(data), "application/dicom", {"patient-id": "p1"},
    )
    assert head.last_modified is not None
    assert read_all(store, bucket, "scans/one.dcm") == data


def test_put_explicit_content_type_and_tags(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "a.bin", b"1", content_type="image/png", tags={"phi": "no", "site": "b"})
    assert store.head(bucket, "a.bin").content_type == "image/png"
    assert store.tags(bucket, "a.bin") == {"phi": "no", "site": "b"}


def test_put_file_object_and_iterator(store: ObjectStore, bucket: str) -> None:
    data = bytes(range(256)) * 5000
    store.put(bucket, "from-file", io.BytesIO(data))
    store.put(bucket, "from-iter", iter([data[:1000], b"", data[1000:]]))
    for key in ("from-file", "from-iter"):
        assert store.head(bucket, key).etag == md5(data)
        assert read_all(store, bucket, key) == data


def test_get_reads_in_chunks(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"0123456789")
    with store.get(bucket, "k") as reader:
        assert reader.info.size == 10
        assert reader.read(4) == b"0123"
        assert reader.read(4) == b"4567"
        assert reader.read(4) == b"89"
        assert reader.read(4) == b""


def test_zero_byte_object(store: ObjectStore, bucket: str) -> None:
    info = store.put(bucket, "empty", b"")
    assert (info.size, info.etag) == (0, EMPTY_MD5)
    assert store.head(bucket, "empty").size == 0
    assert read_all(store, bucket, "empty") == b""
    assert [o.key for o in store.list_objects(bucket).objects] == ["empty"]


def test_overwrite_replaces(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "k", b"old", metadata={"v": "1"})
    store.put(bucket, "k", b"new!")
    head = store.head(bucket, "k")
    assert (head.size, head.etag, dict(head.metadata)) == (4, md5(b"new!"), {})
    assert read_all(store, bucket, "k") == b"new!"


def test_missing_object(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFound, match="not found"):
        store.head(bucket, "nope")
    with pytest.raises(ObjectNotFound):
        store.get(bucket, "nope")
    with pytest.raises(ObjectNotFound):
        store.delete(bucket, "nope")
    store.delete(bucket, "nope", missing_ok=True)


def test_delete(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "dir/k", b"x")
    store.delete(bucket, "dir/k")
    with pytest.raises(ObjectNotFound):
        store.head(bucket, "dir/k")
    assert store.list_objects(bucket).objects == ()


def test_copy_keeps_or_replaces_metadata(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "src.json", b'{"a": 1}', metadata={"owner": "ana"})
    copied = store.copy(bucket, "src.json", bucket, "dst/copy.json")
    assert (copied.size, copied.etag) == (8, md5(b'{"a": 1}'))
    head = store.head(bucket, "dst/copy.json")
    assert (head.content_type, dict(head.metadata)) == ("application/json", {"owner": "ana"})
    store.copy(bucket, "src.json", bucket, "dst/other.json", metadata={"owner": "bo"})
    assert dict(store.head(bucket, "dst/other.json").metadata) == {"owner": "bo"}
    assert read_all(store, bucket, "dst/other.json") == b'{"a": 1}'
    with pytest.raises(ObjectNotFound):
        store.copy(bucket, "absent", bucket, "x")


def test_list_order_prefix_and_pages(store: ObjectStore, bucket: str) -> None:
    keys = ["a-c", "a/b", "a/a/z", "b", "é", "a0", "z/1", "z/2"]
    for key in keys:
        store.put(bucket, key, key.encode())
    listed = [o.key for o in iter_objects(store, bucket, page_size=3)]
    assert listed == sorted(keys, key=lambda k: k.encode())  # UTF-8 byte order, as S3
    assert [o.key for o in store.list_objects(bucket, prefix="a/").objects] == ["a/a/z", "a/b"]
    assert [o.key for o in store.list_objects(bucket, prefix="z").objects] == ["z/1", "z/2"]
    first = store.list_objects(bucket, max_keys=2)
    assert first.is_truncated and [o.key for o in first.objects] == listed[:2]
    second = store.list_objects(bucket, max_keys=2, continuation_token=first.continuation_token)
    assert [o.key for o in second.objects] == listed[2:4]
    after = store.list_objects(bucket, start_after="b")
    assert [o.key for o in after.objects] == [k for k in listed if k > "b"]
    sizes = {o.key: (o.size, o.etag) for o in iter_objects(store, bucket)}
    assert sizes["a/b"] == (3, md5(b"a/b"))


@pytest.mark.parametrize(
    "key",
    ["", "../escape", "a/../../b", "/abs", "a//b", "trailing/", "nul\x00", "back\\slash", "ctl\n", ".", "a/./b",
     "x" * 1025, "é" * 513],
)
def test_invalid_keys_are_refused(store: ObjectStore, bucket: str, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(bucket, key, b"x")
    with pytest.raises(InvalidKey):
        store.head(bucket, key)


def test_invalid_metadata_is_refused(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(InvalidMetadata, match="printable ASCII"):
        store.put(bucket, "k", b"x", metadata={"name": "Zoë"})
    with pytest.raises(InvalidMetadata, match="metadata name"):
        store.put(bucket, "k", b"x", metadata={"bad name": "v"})
    with pytest.raises(InvalidMetadata, match="at most 10 tags"):
        store.put(bucket, "k", b"x", tags={str(i): "v" for i in range(11)})


# --- notification rules -------------------------------------------------------------------------


def test_notification_rules_are_kept_and_removed(store: ObjectStore, bucket: str) -> None:
    rule = store.add_notification(NotificationRule(bucket, "topic-a", suffix=".dcm", prefix="in/"))
    assert rule.mode in ("local", "memory", "sqs", "rgw", "poll")
    again = store.add_notification(NotificationRule(bucket, "topic-a", suffix=".dcm", prefix="in/"))
    assert again.id == rule.id
    assert [r.id for r in store.notifications(bucket)] == [rule.id]  # same rule replaced, not doubled
    other = store.add_notification(NotificationRule(bucket, "topic-b", events=("ObjectRemoved:*",)))
    assert {r.id for r in store.notifications(bucket)} == {rule.id, other.id}
    store.remove_notification(bucket, rule.id)
    assert [r.id for r in store.notifications(bucket)] == [other.id]
    with pytest.raises(NotificationError, match="no notification rule"):
        store.remove_notification(bucket, rule.id)


def test_notification_on_missing_bucket(store: ObjectStore) -> None:
    with pytest.raises(BucketNotFound):
        store.add_notification(NotificationRule(f"nob-{uuid.uuid4().hex[:8]}", "t"))


def test_bad_rules_are_refused() -> None:
    with pytest.raises(NotificationError, match="unknown event type"):
        NotificationRule("bucket", "t", events=("ObjectCreated:Nope",))
    with pytest.raises(NotificationError, match="regular expression"):
        NotificationRule("bucket", "t", regex="(")
    with pytest.raises(NotificationError, match="invalid topic name"):
        NotificationRule("bucket", "bad topic")
    with pytest.raises(InvalidBucketName):
        NotificationRule("B", "t")
