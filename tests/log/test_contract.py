"""The event-log contract (:mod:`kawa.log.base`), written once and run on every backend: the embedded log,
the in-memory log and a real Apache Kafka broker (see ``conftest.py``)."""

from __future__ import annotations

import time
from collections import defaultdict
from functools import partial

import pytest

from kawa.errors import (
    CommitFailed,
    InvalidPartition,
    InvalidTopicSpec,
    ProducerError,
    RecordTooLarge,
    TopicExists,
    TopicNotFound,
)
from kawa.events import from_record, new_event, to_kafka
from kawa.log import EventLog, Record, RecordMetadata, TopicPartition, TopicSpec
from kawa.log.base import now_ms
from kawa.log.partitioner import partition_for_key
from tests.log.conftest import (
    SESSION_TIMEOUT_MS,
    consume,
    consume_idle,
    unique,
    wait_assigned,
)
from tests.log.contract_helpers import NewTopic, consumer, ends, read_all

pytestmark = pytest.mark.timeout(180)


# --- topics ---------------------------------------------------------------------------------------


def test_create_list_describe_delete(log: EventLog) -> None:
    name = unique("topics")
    log.create_topic(TopicSpec(name, 3, retention_ms=3_600_000, retention_bytes=10_000_000))
    assert name in log.list_topics()
    info = log.describe_topic(name)
    assert info.name == name
    assert info.partition_count == 3
    assert [(p.partition, p.start_offset, p.end_offset) for p in info.partitions] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    assert (info.retention_ms, info.retention_bytes, info.cleanup_policy) == (3_600_000, 10_000_000, "delete")
    log.delete_topic(name)
    assert name not in log.list_topics()
    with pytest.raises(TopicNotFound):
        log.describe_topic(name)


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_unlimited_retention_and_cleanup_policies_are_kept(log: EventLog, policy: str) -> None:
    name = unique("policy")
    log.create_topic(TopicSpec(name, 1, retention_ms=None, retention_bytes=None, cleanup_policy=policy))  # type: ignore[arg-type]
    info = log.describe_topic(name)
    assert (info.retention_ms, info.retention_bytes, info.cleanup_policy) == (None, None, policy)


def test_duplicate_create_raises_unless_exist_ok(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(2)
    with pytest.raises(TopicExists):
        log.create_topic(TopicSpec(name, 2))
    log.create_topic(TopicSpec(name, 5), exist_ok=True)
    assert log.describe_topic(name).partition_count == 2  # the existing topic is left as it was


def test_a_recreated_topic_starts_empty(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    log.producer().send(name, b"old")
    log.delete_topic(name)
    log.create_topic(TopicSpec(name, 2))
    assert ends(log, name) == [0, 0]
    assert log.producer().send(name, b"new", partition=0).offset == 0


# --- bad input ------------------------------------------------------------------------------------


def test_unknown_topic_is_topic_not_found_everywhere(log: EventLog) -> None:
    missing = unique("missing")
    producer = log.producer()
    with pytest.raises(TopicNotFound):
        producer.produce(missing, b"x")
    with pytest.raises(TopicNotFound):
        producer.send(missing, b"x")
    with pytest.raises(TopicNotFound):
        log.consumer(unique("g"), [missing])
    with pytest.raises(TopicNotFound):
        log.describe_topic(missing)
    with pytest.raises(TopicNotFound):
        log.delete_topic(missing)
    with pytest.raises(TopicNotFound):
        log.offsets_for_time(missing, 0)
    with pytest.raises(TopicNotFound):
        log.lag(unique("g"), [missing])
    assert missing not in log.list_topics()


@pytest.mark.parametrize("partitions", [0, -1])
def test_zero_or_negative_partitions_are_refused(log: EventLog, partitions: int) -> None:
    name = unique("bad")
    with pytest.raises(InvalidTopicSpec, match="partitions"):
        log.create_topic(TopicSpec(name, partitions))
    assert name not in log.list_topics()


@pytest.mark.parametrize("name", ["", "has space", "a/b", ".", "..", "x" * 250, "ünï", "semi;colon"])
def test_bad_topic_names_are_refused(log: EventLog, name: str) -> None:
    with pytest.raises(InvalidTopicSpec, match="topic name"):
        log.create_topic(TopicSpec(name, 1))


@pytest.mark.parametrize("field", ["retention_ms", "retention_bytes"])
def test_non_positive_retention_is_refused(log: EventLog, field: str) -> None:
    with pytest.raises(InvalidTopicSpec, match=field):
        log.create_topic(TopicSpec(unique("bad"), 1, **{field: 0}))  # type: ignore[arg-type]


def test_oversize_record_raises_record_too_large(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    small = log.producer(max_record_bytes=1000)
    with pytest.raises(RecordTooLarge, match="1000"):
        small.produce(name, b"x" * 1001)
    with pytest.raises(RecordTooLarge):
        small.produce(name, b"x" * 600, key=b"k" * 600)  # the key counts
    with pytest.raises(RecordTooLarge):
        log.producer().produce(name, b"x" * (1024 * 1024 + 1))  # the default limit is 1 MiB
    assert small.send(name, b"x" * 500).offset == 0
    assert ends(log, name) == [1]  # only the record within the limit was stored


@pytest.mark.parametrize("partition", [2, 99, -1])
def test_invalid_explicit_partition_raises(log: EventLog, new_topic: NewTopic, partition: int) -> None:
    name = new_topic(2)
    with pytest.raises(InvalidPartition):
        log.producer().produce(name, b"x", partition=partition)
    assert ends(log, name) == [0, 0]


def test_a_compacted_topic_refuses_records_without_a_key(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1, cleanup_policy="compact")
    with pytest.raises(ProducerError):
        log.producer().send(name, b"no key")
    assert log.producer().send(name, b"keyed", key=b"k").offset >= 0


# --- produce and consume --------------------------------------------------------------------------


def test_round_trip_keeps_keys_values_headers_and_timestamps(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    base = now_ms() - 60_000
    sent = [
        (b"k1", b"v1", (("h", b"1"), ("h", b"2"), ("ce_id", b"abc")), base),
        (None, b"v2", (), base + 1),
        (b"k3", None, (("only", b"header"),), base + 2),
        (b"\x00\xff", bytes(range(256)), (), base + 3),
    ]
    producer = log.producer()
    metadata = [producer.send(name, v, key=k, headers=h, timestamp_ms=ts) for k, v, h, ts in sent]
    assert [(m.topic, m.partition, m.offset, m.timestamp_ms) for m in metadata] == [
        (name, 0, i, ts) for i, (_k, _v, _h, ts) in enumerate(sent)
    ]
    records = read_all(log, name, len(sent))
    assert [(r.topic, r.partition, r.offset) for r in records] == [(name, 0, i) for i in range(len(sent))]
    assert [(r.key, r.value, tuple(r.headers), r.timestamp_ms) for r in records] == sent
    assert records[0].header("H") == b"1"  # the first of its name, case-insensitive
    assert records[1].header("h") is None


def test_a_record_without_timestamp_gets_the_time_of_producing(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    before = now_ms()
    metadata = log.producer().send(name, b"now")
    after = now_ms()
    assert before - 1000 <= metadata.timestamp_ms <= after + 1000
    assert read_all(log, name, 1)[0].timestamp_ms == metadata.timestamp_ms


def test_delivery_callbacks_report_every_record_and_flush_waits(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(3)
    reports: list[tuple[int, RecordMetadata | None, Exception | None]] = []
    producer = log.producer()
    for i in range(60):
        producer.produce(
            name,
            str(i).encode(),
            key=f"key-{i % 7}".encode(),
            on_delivery=partial(lambda i, md, err: reports.append((i, md, err)), i),
        )
    producer.flush(30)
    assert sorted(i for i, _md, _err in reports) == list(range(60))
    assert all(err is None and md is not None for _i, md, err in reports)
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, md, _err in reports:
        assert md is not None
        assert md.partition == partition_for_key(f"key-{i % 7}".encode(), 3)
        by_partition[md.partition].append((i, md.offset))
    for pairs in by_partition.values():
        pairs.sort()
        assert [offset for _i, offset in pairs] == list(range(len(pairs)))  # produce order = offset order
    assert sum(ends(log, name)) == 60
    producer.close()


def test_keys_land_on_the_partition_java_clients_choose(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(7)
    keys = [f"user-{i}".encode() for i in range(40)] + ["ключ".encode(), b"\x00\xff\x10", b"a" * 300]
    producer = log.producer()
    placed = {key: producer.send(name, b"v", key=key).partition for key in keys}
    assert placed == {key: partition_for_key(key, 7) for key in keys}
    assert {r.key: r.partition for r in read_all(log, name, len(keys))} == placed


def test_records_without_key_spread_over_partitions(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(4)
    producer = log.producer()
    for batch in range(10):
        for i in range(10):
            producer.produce(name, f"{batch}-{i}".encode())
        producer.flush(30)
        time.sleep(0.02)  # librdkafka keeps key-less records on one partition for 10 ms at a time
    counts = ends(log, name)
    assert sum(counts) == 100
    assert sum(1 for c in counts if c) >= 2


def test_explicit_partition_wins_over_the_key(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(3)
    key = next(k for k in (f"k{i}".encode() for i in range(100)) if partition_for_key(k, 3) != 2)
    assert log.producer().send(name, b"x", key=key, partition=2).partition == 2
    assert ends(log, name) == [0, 0, 1]
    (record,) = read_all(log, name, 1)
    assert (record.partition, record.key) == (2, key)


def test_order_within_each_partition_is_produce_order(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(3)
    producer = log.producer()
    for seq in range(300):
        key = f"k{seq % 10}"
        producer.produce(name, f"{key}:{seq}".encode(), key=key.encode())
    producer.flush(30)
    records = read_all(log, name, 300)
    seqs: dict[bytes | None, list[int]] = defaultdict(list)
    offsets: dict[int, list[int]] = defaultdict(list)
    for r in records:
        assert r.value is not None
        seqs[r.key].append(int(r.value.split(b":")[1]))
        offsets[r.partition].append(r.offset)
    assert all(s == sorted(s) and len(s) == 30 for s in seqs.values())
    assert all(o == list(range(len(o))) for o in offsets.values())


# --- commit ---------------------------------------------------------------------------------------


def test_committed_offset_is_the_next_record_and_a_new_member_resumes_there(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    producer = log.producer()
    for i in range(10):
        producer.produce(name, str(i).encode())
    producer.flush(30)
    group = unique("g")
    tp = TopicPartition(name, 0)
    first = consumer(log, name, group)
    assert [r.offset for r in consume(first, 4)] == [0, 1, 2, 3]
    assert first.position(tp) == 4
    first.commit()  # the current position
    assert first.committed([tp]) == {tp: 4}
    first.commit({tp: 6})  # explicit: records 4 and 5 count as processed
    assert first.committed([tp]) == {tp: 6}
    first.close()

    second = consumer(log, name, group)
    assert [r.offset for r in consume(second, 4)] == [6, 7, 8, 9]
    assert second.committed([tp]) == {tp: 6}  # reading does not commit
    second.commit()
    assert second.committed([tp]) == {tp: 10}
    second.close()


def test_uncommitted_records_are_delivered_again(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    producer = log.producer()
    for i in range(5):
        producer.produce(name, str(i).encode())
    producer.flush(30)
    group = unique("g")
    first = consumer(log, name, group)
    consume(first, 5)
    first.commit({TopicPartition(name, 0): 2})
    first.close()  # stopped before committing 2..4
    second = consumer(log, name, group)
    assert [r.value for r in consume(second, 3)] == [b"2", b"3", b"4"]
    second.close()


def test_without_a_commit_earliest_starts_at_the_beginning(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    producer = log.producer()
    for i in range(5):
        producer.produce(name, str(i).encode())
    producer.flush(30)
    c = consumer(log, name, auto_offset_reset="earliest")
    assert [r.offset for r in consume(c, 5)] == [0, 1, 2, 3, 4]
    assert c.committed([TopicPartition(name, 0)]) == {TopicPartition(name, 0): None}
    c.close()


def test_without_a_commit_latest_reads_only_new_records(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    producer = log.producer()
    for i in range(5):
        producer.produce(name, str(i).encode())
    producer.flush(30)
    c = consumer(log, name, auto_offset_reset="latest")
    assert wait_assigned(c) == []
    tp = TopicPartition(name, 0)
    assert c.position(tp) == 5
    for i in range(5, 8):
        producer.produce(name, str(i).encode())
    producer.flush(30)
    assert [(r.offset, r.value) for r in consume(c, 3)] == [(5, b"5"), (6, b"6"), (7, b"7")]
    c.close()


# --- seek and time --------------------------------------------------------------------------------


def test_seek_to_offset_beginning_and_end(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(2)
    producer = log.producer()
    for i in range(10):
        producer.produce(name, f"a{i}".encode(), partition=0)
    for i in range(6):
        producer.produce(name, f"b{i}".encode(), partition=1)
    producer.flush(30)
    tp0, tp1 = TopicPartition(name, 0), TopicPartition(name, 1)
    c = consumer(log, name)
    seen = wait_assigned(c)
    seen += consume(c, 16 - len(seen))
    assert c.assignment() == {tp0, tp1}
    assert (c.position(tp0), c.position(tp1)) == (10, 6)

    c.seek(tp0, 3)
    assert c.position(tp0) == 3
    assert [(r.partition, r.offset) for r in consume(c, 7)] == [(0, o) for o in range(3, 10)]

    c.seek_to_beginning([tp1])
    assert c.position(tp1) == 0
    assert [(r.partition, r.offset) for r in consume(c, 6)] == [(1, o) for o in range(6)]

    c.seek_to_beginning()
    assert sorted((r.partition, r.offset) for r in consume(c, 16)) == sorted((r.partition, r.offset) for r in seen)

    c.seek_to_end()
    assert (c.position(tp0), c.position(tp1)) == (10, 6)
    assert c.poll(0.5) == []
    producer.send(name, b"later", partition=0)
    assert [(r.partition, r.offset, r.value) for r in consume(c, 1)] == [(0, 10, b"later")]
    c.close()


def test_offsets_for_time_and_seek_to_time(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(2)
    base = now_ms() - 100_000
    producer = log.producer()
    for i in range(10):
        producer.produce(name, f"a{i}".encode(), partition=0, timestamp_ms=base + i * 1000)
    for i in range(5):
        producer.produce(name, f"b{i}".encode(), partition=1, timestamp_ms=base + 500 + i * 1000)
    producer.flush(30)

    assert log.offsets_for_time(name, base + 2500) == {0: 3, 1: 2}
    assert log.offsets_for_time(name, base + 3000) == {0: 3, 1: 3}  # the timestamp itself counts (>=)
    assert log.offsets_for_time(name, 0) == {0: 0, 1: 0}
    assert log.offsets_for_time(name, base + 10**7) == {0: 10, 1: 5}  # none that late: the end

    c = consumer(log, name)
    seen = wait_assigned(c)
    consume(c, 15 - len(seen))
    c.seek_to_time(base + 2500)
    assert (c.position(TopicPartition(name, 0)), c.position(TopicPartition(name, 1))) == (3, 2)
    again = consume(c, 7 + 3)
    assert sorted((r.partition, r.offset) for r in again) == [(0, o) for o in range(3, 10)] + [
        (1, o) for o in (2, 3, 4)
    ]
    assert all(r.timestamp_ms >= base + 2500 for r in again)
    c.close()


# --- lag --------------------------------------------------------------------------------------------


def test_lag_per_partition(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(2)
    producer = log.producer()
    for _i in range(4):
        producer.produce(name, b"x", partition=0)
    for _i in range(6):
        producer.produce(name, b"y", partition=1)
    producer.flush(30)
    group = unique("g")
    c = consumer(log, name, group)
    seen = wait_assigned(c)
    consume(c, 10 - len(seen))
    c.commit({TopicPartition(name, 0): 4, TopicPartition(name, 1): 2})
    expected = {(name, 0): (4, 4, 0), (name, 1): (2, 6, 4)}
    rows = {(r.topic, r.partition): (r.committed, r.end_offset, r.lag) for r in log.lag(group, [name])}
    assert rows == expected
    rows = {(r.topic, r.partition): (r.committed, r.end_offset, r.lag) for r in log.lag(group)}
    assert rows == expected
    c.close()
    never = {(r.topic, r.partition): (r.committed, r.end_offset, r.lag) for r in log.lag(unique("g"), [name])}
    assert never == {(name, 0): (None, 4, 4), (name, 1): (None, 6, 6)}
    # Kafka's internal topics (``__consumer_offsets``) stay hidden.
    assert not any(topic.startswith("__") for topic in log.list_topics())


# --- groups -----------------------------------------------------------------------------------------


def test_two_members_split_the_partitions_and_the_survivor_takes_all(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(4)
    group = unique("g")
    everything = {TopicPartition(name, p) for p in range(4)}
    a = consumer(log, name, group, client_id="a")
    b = consumer(log, name, group, client_id="b")
    deadline = time.monotonic() + 60
    while True:
        assert a.poll(0.1) == [] and b.poll(0.1) == []
        split = a.assignment(), b.assignment()
        if split[0] and split[1] and not split[0] & split[1] and split[0] | split[1] == everything:
            break
        assert time.monotonic() < deadline, f"no split of {name} between two members: {split}"

    producer = log.producer()
    for i in range(40):
        producer.produce(name, str(i).encode(), key=f"k{i}".encode())
    producer.flush(30)
    got: dict[str, list[Record]] = {"a": [], "b": []}
    deadline = time.monotonic() + 30
    while len(got["a"]) + len(got["b"]) < 40:
        assert time.monotonic() < deadline, "the two members did not read all 40 records"
        got["a"] += a.poll(0.1)
        got["b"] += b.poll(0.1)
    assert {TopicPartition(r.topic, r.partition) for r in got["a"]} <= a.assignment()
    assert {TopicPartition(r.topic, r.partition) for r in got["b"]} <= b.assignment()
    assert sorted(int(r.value or b"") for r in got["a"] + got["b"]) == list(range(40))
    a.commit()

    # A member cannot commit a partition the group gave to another member.
    foreign = next(iter(b.assignment()))
    with pytest.raises(CommitFailed):
        a.commit({foreign: 1})

    a.close()
    deadline = time.monotonic() + 30
    late: list[Record] = []
    while b.assignment() != everything:
        assert time.monotonic() < deadline, f"the survivor did not take over: {b.assignment()}"
        late += b.poll(0.1)
    # a committed what it read, so its partitions resume after that.
    assert late + consume_idle(b, idle=0.5) == []
    for i in range(8):
        producer.produce(name, f"after-{i}".encode(), partition=i % 4)
    producer.flush(30)
    assert sorted(r.value or b"" for r in consume(b, 8)) == sorted(f"after-{i}".encode() for i in range(8))
    b.close()


def test_seek_before_assignment_applies_once_assigned(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1)
    producer = log.producer()
    for i in range(6):
        producer.produce(name, str(i).encode())
    producer.flush(30)
    c = log.consumer(unique("g"), [name], session_timeout_ms=SESSION_TIMEOUT_MS, auto_offset_reset="latest")
    c.seek(TopicPartition(name, 0), 2)  # the group may not have assigned the partition yet
    assert [r.offset for r in consume(c, 4)] == [2, 3, 4, 5]
    c.close()


def test_a_cloudevent_round_trips(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(3)
    event = new_event(
        "dev.kawa.test.ping", "/tests/contract", {"n": 1}, subject="thing", extensions={"partitionkey": "abc"}
    )
    key, value, headers = to_kafka(event)
    metadata = log.producer().send(name, value, key=key, headers=headers)
    assert metadata.partition == partition_for_key(b"abc", 3)
    (record,) = read_all(log, name, 1)
    back = from_record(record)
    for attribute in ("id", "source", "type", "subject", "time", "datacontenttype", "specversion"):
        assert back.get_attributes()[attribute] == event.get_attributes()[attribute]
    assert back.get_data() == {"n": 1}
    assert record.header("ce_specversion") == b"1.0"
