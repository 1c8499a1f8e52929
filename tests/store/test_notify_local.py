"""Notifications of the local backend: puts through Kawa, files copied in by `cp`, restarts, crashes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kawa.events import from_record
from kawa.log import EventLog
from kawa.store import NotificationRule, ObjectStore, parse_records
from kawa.store.local import LocalStore
from kawa.store.watcher import LocalWatchService
from tests.store.conftest import make_config, read_topic, s3_record

TOPIC = "xray-images"


@pytest.fixture
def local(open_backend: Callable[[str], ObjectStore]) -> LocalStore:
    store = open_backend("local")
    assert isinstance(store, LocalStore)
    store.create_bucket("xray")
    store.add_notification(NotificationRule("xray", TOPIC, events=("ObjectCreated:*", "ObjectRemoved:*")))
    return store


@pytest.fixture
def watcher(local: LocalStore) -> Iterator[Callable[[], LocalWatchService]]:
    started: list[LocalWatchService] = []

    def start() -> LocalWatchService:
        service = LocalWatchService(local, settle_s=0.2, rescan_interval_s=3600)
        service.start()
        assert service.ready.wait(10), "watcher did not become ready"
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def events(log: EventLog, want: int, timeout: float = 10.0) -> list[tuple[str, str, str, int, str | None]]:
    out = []
    for record in read_topic(log, TOPIC, want, timeout):
        event = parse_records(record)[0]
        out.append((event.event_name, event.bucket, event.key, event.size, event.etag))
    return out


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_put_copy_delete_through_kawa_publish_one_event_each(
    open_backend: Callable[[str], ObjectStore], event_log: EventLog, backend: str
) -> None:
    store = open_backend(backend)
    store.create_bucket("xray")
    store.add_notification(NotificationRule("xray", TOPIC, events=("ObjectCreated:*", "ObjectRemoved:*")))
    info = store.put("xray", "in/scan 1.dcm", b"dicom", metadata={"patient": "p1"})
    store.copy("xray", "in/scan 1.dcm", "xray", "copy.dcm")
    store.delete("xray", "in/scan 1.dcm")
    records = read_topic(event_log, TOPIC, 3)
    assert [(parse_records(r)[0].event_name, parse_records(r)[0].key) for r in records] == [
        ("ObjectCreated:Put", "in/scan 1.dcm"),
        ("ObjectCreated:Copy", "copy.dcm"),
        ("ObjectRemoved:Delete", "in/scan 1.dcm"),
    ]
    put = records[0]
    assert put.key == b"xray/in/scan 1.dcm"  # one object's events stay on one partition
    cloud = from_record(put)
    assert cloud.get_type() == "com.amazonaws.s3.ObjectCreated:Put"
    assert cloud.get_source() == "kawa:s3.us-east-1.xray"
    assert cloud.get_subject() == "in/scan 1.dcm"
    record = s3_record(put)
    assert record["eventName"] == "ObjectCreated:Put" and record["eventSource"] == "kawa:s3"
    assert record["s3"]["bucket"] == {"name": "xray", "arn": "arn:aws:s3:::xray"}
    assert record["s3"]["object"]["size"] == 5 and record["s3"]["object"]["eTag"] == info.etag == md5(b"dicom")
    assert record["s3"]["object"]["sequencer"] == info.sequencer
    assert cloud.get_time() is not None and record["eventTime"].endswith("Z")
    seqs = [int(s3_record(r)["s3"]["object"]["sequencer"], 16) for r in records]
    assert seqs == sorted(seqs)


def test_filters_and_event_types(open_backend: Callable[[str], ObjectStore], event_log: EventLog) -> None:
    store = open_backend("local")
    store.create_bucket("xray")
    store.add_notification(NotificationRule("xray", "dcm-in", prefix="in/", suffix=".dcm", regex=r"in/[a-z]+\.dcm"))
    store.add_notification(NotificationRule("xray", "removed", events=("ObjectRemoved:*",)))
    for key in ("in/scan.dcm", "in/scan2.dcm", "out/scan.dcm", "in/scan.png"):
        store.put("xray", key, b"x")
    store.delete("xray", "out/scan.dcm")
    assert [parse_records(r)[0].key for r in read_topic(event_log, "dcm-in", 1)] == ["in/scan.dcm"]
    assert [parse_records(r)[0].key for r in read_topic(event_log, "removed", 1)] == ["out/scan.dcm"]


def test_no_rule_no_event_and_topic_created_at_rule_time(local: LocalStore, event_log: EventLog) -> None:
    assert TOPIC in event_log.list_topics()  # consumers can subscribe before the first event
    local.create_bucket("other")
    local.put("other", "k", b"x")
    assert read_topic(event_log, TOPIC, 0, linger=0.3) == []


def test_cp_into_bucket_directory_notifies_once(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService], tmp_path: Path
) -> None:
    watcher()
    source = tmp_path / "scan.dcm"
    data = os.urandom(300_000)
    source.write_bytes(data)
    subprocess.run(["cp", str(source), str(local.root / "xray" / "scan.dcm")], check=True)
    (local.root / "xray" / "sub").mkdir()
    subprocess.run(["cp", str(source), str(local.root / "xray" / "sub" / "nested.dcm")], check=True)
    got = events(event_log, 2)
    assert sorted(got) == [
        ("ObjectCreated:Put", "xray", "scan.dcm", len(data), md5(data)),
        ("ObjectCreated:Put", "xray", "sub/nested.dcm", len(data), md5(data)),
    ]


def test_put_through_kawa_is_not_notified_again_by_the_watcher(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService]
) -> None:
    watcher()
    for i in range(5):
        local.put("xray", f"k{i}", b"v" * i)
    local.delete("xray", "k1")
    got = events(event_log, 6, timeout=5)
    time.sleep(1.0)  # give the watcher time to (wrongly) report the renames and the unlink
    got += events(event_log, 0, timeout=0)[len(got) :]
    assert [g[0] for g in got].count("ObjectCreated:Put") == 5
    assert [g[0] for g in got].count("ObjectRemoved:Delete") == 1
    assert len(got) == 6


def test_rm_and_overwrite_by_other_programs(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService]
) -> None:
    watcher()
    path = local.root / "xray" / "a.dcm"
    path.write_bytes(b"one")
    assert events(event_log, 1) == [("ObjectCreated:Put", "xray", "a.dcm", 3, md5(b"one"))]
    path.write_bytes(b"second")
    assert events(event_log, 2)[1] == ("ObjectCreated:Put", "xray", "a.dcm", 6, md5(b"second"))
    os.remove(path)
    assert events(event_log, 3)[2:] == [("ObjectRemoved:Delete", "xray", "a.dcm", 0, None)]


def test_restart_notifies_files_written_while_down_exactly_once(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService], tmp_path: Path
) -> None:
    first = watcher()
    (local.root / "xray" / "before.dcm").write_bytes(b"b")
    assert len(events(event_log, 1)) == 1
    first.stop()
    # Kawa is down: files arrive, one changes, one goes.
    (local.root / "xray" / "down-1.dcm").write_bytes(b"d1")
    (local.root / "xray" / "later").mkdir()
    shutil.copy(local.root / "xray" / "down-1.dcm", local.root / "xray" / "later" / "down-2.dcm")
    time.sleep(0.3)  # older than settle_s: complete
    second = watcher()
    got = events(event_log, 3)
    assert sorted(g[2] for g in got[1:]) == ["down-1.dcm", "later/down-2.dcm"]
    assert len(got) == 3
    second.stop()
    # Restart twice more: nothing is notified again.
    for _ in range(2):
        watcher().stop()
    assert len(events(event_log, 3, timeout=1)) == 3
    # While down: before.dcm is removed and down-1.dcm is rewritten.
    os.remove(local.root / "xray" / "before.dcm")
    (local.root / "xray" / "down-1.dcm").write_bytes(b"changed")
    time.sleep(0.3)
    watcher()
    got = events(event_log, 5)
    assert sorted(g[:3] for g in got[3:]) == [
        ("ObjectCreated:Put", "xray", "down-1.dcm"),
        ("ObjectRemoved:Delete", "xray", "before.dcm"),
    ]


def test_rule_added_later_does_not_replay_existing_files(tmp_path: Path, event_log: EventLog) -> None:
    store = LocalStore(tmp_path / "root", make_config(tmp_path / ".kawa"), event_log)
    store.create_bucket("xray")
    (store.root / "xray" / "old.dcm").write_bytes(b"old")
    store.add_notification(NotificationRule("xray", TOPIC))
    service = LocalWatchService(store, settle_s=0.1, rescan_interval_s=3600)
    service.start()
    try:
        assert service.ready.wait(10)
        (store.root / "xray" / "new.dcm").write_bytes(b"new")
        assert [parse_records(r)[0].key for r in read_topic(event_log, TOPIC, 1)] == ["new.dcm"]
    finally:
        service.stop()
        store.close()


def test_a_put_whose_writer_died_before_publishing_is_finished_by_reconciliation(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate a crash between the rename and the publish: the put raises instead of publishing.
    def crash(*args: object, **kwargs: object) -> int:
        raise SystemExit("killed")

    monkeypatch.setattr(local.tracker, "created", crash)
    with pytest.raises(SystemExit):
        local.put("xray", "orphan.dcm", b"payload", metadata={"m": "1"})
    monkeypatch.undo()
    entry = local.ledger.get("xray", "orphan.dcm")
    assert entry is not None and entry.state == "pending"
    # Its writer is gone: a dead pid in the pending row.
    sig = entry.signature
    with local.ledger._lock:
        local.ledger._db.execute("UPDATE objects SET pid=? WHERE key=?", (2**22 + 12345, "orphan.dcm"))
    assert local.ledger.get("xray", "orphan.dcm").signature == sig  # type: ignore[union-attr]
    watcher()
    got = read_topic(event_log, TOPIC, 1)
    assert len(got) == 1
    event = parse_records(got[0])[0]
    assert (event.key, event.size, event.etag, event.metadata) == ("orphan.dcm", 7, md5(b"payload"), {"m": "1"})


def test_a_file_still_being_written_is_notified_only_when_complete(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService]
) -> None:
    watcher()
    path = local.root / "xray" / "slow.dcm"
    with open(path, "wb") as handle:
        handle.write(b"a" * 1000)
        handle.flush()
        time.sleep(0.8)  # longer than settle_s, but the writer still holds the file open
        assert events(event_log, 0, timeout=0) == []
        handle.write(b"b" * 1000)
    got = events(event_log, 1)
    assert got == [("ObjectCreated:Put", "xray", "slow.dcm", 2000, md5(b"a" * 1000 + b"b" * 1000))]


def test_re_adding_a_rule_at_startup_does_not_swallow_files_that_arrived_while_down(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService]
) -> None:
    (local.root / "xray" / "while-down.dcm").write_bytes(b"d")
    # What a function app does on every `kawa up`: add its (unchanged) rule again, before the scan runs.
    local.add_notification(NotificationRule("xray", TOPIC, events=("ObjectCreated:*", "ObjectRemoved:*")))
    time.sleep(0.3)
    watcher()
    assert [g[2] for g in events(event_log, 1)] == ["while-down.dcm"]


def test_files_moved_or_linked_in_from_outside_notify_once(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService], tmp_path: Path
) -> None:
    watcher()
    moved, linked = tmp_path / "moved.dcm", tmp_path / "linked.dcm"
    moved.write_bytes(b"moved in")
    linked.write_bytes(b"linked in")
    subprocess.run(["mv", str(moved), str(local.root / "xray" / "moved.dcm")], check=True)
    subprocess.run(["ln", str(linked), str(local.root / "xray" / "linked.dcm")], check=True)
    got = events(event_log, 2, timeout=5)
    assert sorted(got) == [
        ("ObjectCreated:Put", "xray", "linked.dcm", 9, md5(b"linked in")),
        ("ObjectCreated:Put", "xray", "moved.dcm", 8, md5(b"moved in")),
    ]


def test_a_put_while_the_log_is_down_is_published_from_the_outbox_when_it_is_back(
    local: LocalStore, event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kawa.errors import NotificationPending, ProducerError

    class DownProducer:
        def produce(self, *args: object, **kwargs: object) -> None:
            raise ProducerError("broker not available")

    monkeypatch.setattr(local.notifier, "_ensure", lambda topic: DownProducer())
    with pytest.raises(NotificationPending, match=r"is stored.*waits in the outbox"):
        local.put("xray", "late.dcm", b"late")
    assert (local.root / "xray" / "late.dcm").read_bytes() == b"late"
    assert local.notifier.outbox is not None and local.notifier.outbox.count() == 1
    monkeypatch.undo()  # the log is back; nobody calls anything: the outbox relay publishes it
    got = events(event_log, 1, timeout=60)
    assert got == [("ObjectCreated:Put", "xray", "late.dcm", 4, md5(b"late"))]


def test_a_hidden_partial_file_is_not_notified_only_its_rename(
    local: LocalStore, event_log: EventLog, watcher: Callable[[], LocalWatchService]
) -> None:
    service = watcher()
    partial = local.root / "xray" / ".scan.dcm.part"
    partial.write_bytes(b"half")
    old = time.time() - 60
    os.utime(partial, (old, old))  # a slow scanner: the partial file looks settled to a rescan
    service.scan("xray")  # nothing to notify: it is still being written
    partial.write_bytes(b"half and the rest")
    partial.rename(local.root / "xray" / "scan.dcm")
    got = events(event_log, 1)
    assert got == [("ObjectCreated:Put", "xray", "scan.dcm", 17, md5(b"half and the rest"))]
    service.scan("xray")
    assert len(read_topic(event_log, TOPIC, 2, 2.0)) == 1, "the partial file was never notified"
