"""Embedded-log behaviour beyond the shared contract: crash safety, torn tails, damage, on-disk retention."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kawa.errors import CorruptLog, ProducerError
from kawa.log.base import TopicPartition, TopicSpec
from kawa.log.embedded import EmbeddedLog
from kawa.log.embedded.segment import segment_name

PRODUCER_SCRIPT = textwrap.dedent(
    """
    import sys
    from kawa.log.embedded import EmbeddedLog
    log = EmbeddedLog(sys.argv[1])
    producer = log.producer(linger_ms=0.5)
    acked = open(sys.argv[2], "a", buffering=1)

    def done(meta, err, i):
        if err is None:
            acked.write(f"{i}\\n")

    i = 0
    while True:
        producer.produce("crash", b"record-%d" % i, key=b"k%d" % (i % 7), on_delivery=lambda m, e, i=i: done(m, e, i))
        i += 1
        if i % 50 == 0:
            producer.flush()
    """
)


def test_acknowledged_records_survive_sigkill_of_the_producer(tmp_path: Path) -> None:
    root = tmp_path / "log"
    log = EmbeddedLog(root, segment_bytes=64 * 1024)
    log.create_topic(TopicSpec("crash", partitions=3))
    acked_file = tmp_path / "acked.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", PRODUCER_SCRIPT, str(root), str(acked_file)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if acked_file.exists() and len(acked_file.read_text().splitlines()) > 5000:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked = {int(line) for line in acked_file.read_text().splitlines() if line.strip()}
    assert len(acked) > 5000

    # A fresh process (this one) reads everything back; a new writer repairs any torn tail first.
    log = EmbeddedLog(root, segment_bytes=64 * 1024)
    log.producer().send("crash", b"after-crash", key=b"k0")
    consumer = log.consumer("verify", ["crash"])
    seen: set[int] = set()
    idle = 0
    while idle < 5:
        records = consumer.poll(timeout=0.2, max_records=5000)
        idle = 0 if records else idle + 1
        for record in records:
            assert record.value is not None
            if record.value.startswith(b"record-"):
                seen.add(int(record.value.split(b"-")[1]))
    consumer.close()
    missing = acked - seen
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    # Per key the values stay in produce order (one key → one partition, ordered).
    log.close()


def test_torn_tail_is_truncated_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = EmbeddedLog(tmp_path / "log")
    log.create_topic(TopicSpec("t"))
    producer = log.producer()
    for i in range(10):
        producer.send("t", b"v%d" % i)
    log.close()
    segment = tmp_path / "log" / "topics" / "t" / "0" / segment_name(0)
    whole = segment.stat().st_size
    with open(segment, "ab") as f:  # half a frame: what a writer killed mid-write leaves
        f.write(b"\x40\x00\x00\x00\x01\x02\x03")

    log = EmbeddedLog(tmp_path / "log")
    consumer = log.consumer("g", ["t"])
    assert [r.value for r in consumer.poll(1.0)] == [b"v%d" % i for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="kawa.log.embedded"):
        meta = log.producer().send("t", b"next")
    assert meta.offset == 10
    assert "torn tail" in caplog.text
    assert segment.stat().st_size > whole
    assert [r.value for r in consumer.poll(1.0)] == [b"next"]
    consumer.close()


def test_damaged_record_raises_corrupt_log(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log")
    log.create_topic(TopicSpec("t"))
    for i in range(3):
        log.producer().send("t", b"value-%d" % i)
    segment = tmp_path / "log" / "topics" / "t" / "0" / segment_name(0)
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last record's value
    segment.write_bytes(bytes(data))
    fresh = EmbeddedLog(tmp_path / "log")
    consumer = fresh.consumer("g", ["t"])
    with pytest.raises(CorruptLog, match="checksum"):
        consumer.poll(1.0)
    consumer.close()


def test_segments_roll_and_retention_by_bytes_removes_old_ones(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log", segment_bytes=2000)
    log.create_topic(TopicSpec("t", retention_bytes=5000))
    producer = log.producer()
    for i in range(200):
        producer.produce("t", b"x" * 80 + b"%d" % i)
    producer.flush()
    for i in range(5):  # single sends roll segments at the 2000-byte boundary
        producer.send("t", b"tail-%d" % i)
    partition_dir = tmp_path / "log" / "topics" / "t" / "0"
    before = sorted(partition_dir.glob("*.log"))
    assert len(before) >= 2
    log.maintain()
    after = sorted(partition_dir.glob("*.log"))
    assert len(after) < len(before)
    info = log.describe_topic("t").partitions[0]
    assert info.start_offset > 0 and info.end_offset == 205
    consumer = log.consumer("g", ["t"])
    records = consumer.poll(1.0, max_records=1000)
    assert records[0].offset == info.start_offset
    assert records[-1].value == b"tail-4"
    consumer.close()


def test_retention_by_time_keeps_the_active_segment(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log", segment_bytes=500)
    log.create_topic(TopicSpec("t", retention_ms=60_000))
    old = int(time.time() * 1000) - 3_600_000
    producer = log.producer()
    for i in range(20):
        producer.send("t", b"old-%02d" % i + b"." * 40, timestamp_ms=old)
    producer.send("t", b"new")
    log.maintain()
    start, end = log.partition(TopicPartition("t", 0)).bounds()
    assert start > 0 and end == 21
    consumer = log.consumer("g", ["t"])
    values = [r.value for r in consumer.poll(1.0)]
    assert values[-1] == b"new" and len(values) == end - start
    consumer.close()


def test_compaction_keeps_the_last_value_per_key_and_tombstones_delete(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log", segment_bytes=300, delete_retention_ms=0)
    log.create_topic(TopicSpec("state", cleanup_policy="compact"))
    producer = log.producer()
    for round_ in range(5):
        for key in (b"a", b"b", b"c"):
            producer.send("state", b"%s-%d" % (key, round_), key=key)
    producer.send("state", None, key=b"b")  # tombstone
    time.sleep(0.01)  # older than delete_retention_ms=0 by the time compaction runs
    with pytest.raises(ProducerError, match="needs a key"):
        producer.produce("state", b"no key")
    log.maintain()
    consumer = log.consumer("g", ["state"])
    latest = {r.key: r.value for r in consumer.poll(1.0)}
    assert latest == {b"a": b"a-4", b"c": b"c-4"}
    # Offsets survive compaction; the next record continues after the old end.
    assert log.producer().send("state", b"a-5", key=b"a").offset == 16
    consumer.close()


def test_two_logs_on_one_directory_see_each_others_records(tmp_path: Path) -> None:
    writer = EmbeddedLog(tmp_path / "log")
    writer.create_topic(TopicSpec("shared", partitions=2))
    reader = EmbeddedLog(tmp_path / "log")
    consumer = reader.consumer("g", ["shared"])
    assert consumer.poll(0.1) == []
    writer.producer().send("shared", b"hello", key=b"k")
    records = consumer.poll(2.0)
    assert [r.value for r in records] == [b"hello"]
    consumer.close()


def test_a_group_that_never_committed_leaves_no_state_behind(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log")
    log.create_topic(TopicSpec("t"))
    log.producer().send("t", b"x")
    watcher = log.consumer("watch-1", ["t"], auto_offset_reset="latest")
    assert (tmp_path / "log" / "groups" / "watch-1.json").exists()
    watcher.close()
    assert not (tmp_path / "log" / "groups" / "watch-1.json").exists()
    # A group with committed offsets keeps them after its last member leaves.
    reader = log.consumer("keeper", ["t"])
    assert [r.value for r in reader.poll(1.0)] == [b"x"]
    reader.commit()
    reader.close()
    assert log.lag("keeper")[0].committed == 1
    again = log.consumer("keeper", ["t"])
    assert again.poll(0.2) == []
    again.close()
