"""What only the local backend promises: a plain directory tree, atomic writes, foreign files as objects."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kawa.errors import InvalidKey, ObjectNotFound
from kawa.store import open_store
from kawa.store.local import LocalStore
from tests.store.conftest import make_config


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    store = open_store("file:", make_config(tmp_path / ".kawa"))
    assert isinstance(store, LocalStore)
    yield store
    store.close()


def test_default_root_is_buckets_under_the_home(store: LocalStore, tmp_path: Path) -> None:
    store.create_bucket("xray")
    assert (tmp_path / ".kawa" / "buckets" / "xray").is_dir()


def test_path_uris(tmp_path: Path) -> None:
    config = make_config(tmp_path / ".kawa")
    for uri, root in (
        (str(tmp_path / "p1"), tmp_path / "p1"),
        (f"file:{tmp_path / 'p2'}", tmp_path / "p2"),
        (f"file://{tmp_path / 'p3'}", tmp_path / "p3"),
    ):
        store = open_store(uri, config)
        assert isinstance(store, LocalStore)
        store.create_bucket("bkt")
        assert (root / "bkt").is_dir()
        store.close()


def test_bucket_directory_shows_only_user_files(store: LocalStore) -> None:
    store.create_bucket("xray")
    store.put("xray", "scan.dcm", b"x", metadata={"a": "b"})
    store.put("xray", "in/deep.dcm", b"y")
    bucket_dir = store.root / "xray"
    assert sorted(os.listdir(bucket_dir)) == ["in", "scan.dcm"]
    assert os.listdir(bucket_dir / "in") == ["deep.dcm"]
    assert (bucket_dir / "scan.dcm").read_bytes() == b"x"
    assert not os.listdir(store.root / ".kawa-tmp")


def test_failed_put_leaves_the_old_object_and_no_partial_file(store: LocalStore) -> None:
    store.create_bucket("xray")
    store.put("xray", "k", b"old")

    def broken() -> Iterator[bytes]:
        yield b"new data that never completes"
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        store.put("xray", "k", broken())
    assert (store.root / "xray" / "k").read_bytes() == b"old"
    assert store.head("xray", "k").etag == hashlib.md5(b"old").hexdigest()
    assert os.listdir(store.root / "xray") == ["k"]
    assert not os.listdir(store.root / ".kawa-tmp")


def test_files_written_by_other_programs_are_objects(store: LocalStore, tmp_path: Path) -> None:
    store.create_bucket("xray")
    source = tmp_path / "scan.dcm"
    source.write_bytes(b"dicom bytes")
    shutil.copy(source, store.root / "xray" / "scan.dcm")
    head = store.head("xray", "scan.dcm")
    assert (head.size, head.etag, head.content_type) == (
        11,
        hashlib.md5(b"dicom bytes").hexdigest(),
        "application/dicom",
    )
    assert [o.key for o in store.list_objects("xray").objects] == ["scan.dcm"]
    # Overwritten by another program after a Kawa put: the stale sidecar is not trusted.
    store.put("xray", "k", b"kawa", metadata={"m": "1"})
    (store.root / "xray" / "k").write_bytes(b"foreign!")
    head = store.head("xray", "k")
    assert (head.size, head.etag, dict(head.metadata)) == (8, hashlib.md5(b"foreign!").hexdigest(), {})


def test_key_and_prefix_cannot_both_exist(store: LocalStore) -> None:
    store.create_bucket("xray")
    store.put("xray", "a", b"1")
    with pytest.raises(InvalidKey, match="both 'a' and 'a/b'"):
        store.put("xray", "a/b", b"2")
    store.put("xray", "c/d", b"3")
    with pytest.raises(InvalidKey, match="prefix of other keys"):
        store.put("xray", "c", b"4")
    with pytest.raises(ObjectNotFound):
        store.head("xray", "c")


def test_delete_prunes_empty_directories(store: LocalStore) -> None:
    store.create_bucket("xray")
    store.put("xray", "a/b/c", b"1")
    store.delete("xray", "a/b/c")
    assert os.listdir(store.root / "xray") == []
    assert os.listdir(store.root / ".kawa-meta" / "xray") == []
    store.delete_bucket("xray")
    assert not (store.root / "xray").exists()


def test_directories_that_are_not_bucket_names_are_ignored(store: LocalStore) -> None:
    (store.root / "Not_A_Bucket").mkdir()
    store.create_bucket("real")
    assert [b.name for b in store.list_buckets()] == ["real"]
