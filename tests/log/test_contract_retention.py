"""The event-log contract, part two: retention, compaction and the hypothesis properties of the in-process
backends (part one, ``test_contract.py``, has topics, produce/consume, commits, seeks, lag and groups)."""

from __future__ import annotations

import time
from collections import defaultdict
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kawa.log import EventLog, Record, RecordMetadata, TopicPartition, TopicSpec
from kawa.log.base import now_ms
from kawa.log.partitioner import partition_for_key
from tests.log.conftest import (
    consume,
    eventually,
    unique,
    wait_assigned,
)
from tests.log.contract_helpers import NewTopic, consumer, read_all, read_kept

pytestmark = pytest.mark.timeout(180)


# --- retention and compaction ---------------------------------------------------------------------


def test_retention_by_bytes_drops_the_oldest_records(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1, retention_bytes=3000)
    producer = log.producer()
    for round_ in range(5):
        for i in range(20):
            producer.produce(name, bytes([65 + round_]) * 100, key=f"k{round_}-{i}".encode())
        producer.flush(30)
        time.sleep(0.4)  # so that Kafka closes a segment per round (segment.ms)

    def trimmed() -> bool:
        return log.describe_topic(name).partitions[0].start_offset > 0

    eventually(trimmed, log, what="retention by bytes")
    info = log.describe_topic(name).partitions[0]
    assert info.end_offset == 100
    assert 0 < info.start_offset < 100
    kept = read_kept(log, name)
    # The newest records stay. A broker may trim once more between describe and read, never less.
    assert kept[0].offset >= info.start_offset
    assert [r.offset for r in kept] == list(range(kept[0].offset, 100))
    assert log.producer().send(name, b"next", key=b"n").offset == 100  # offsets continue


def test_retention_by_time_drops_expired_records(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1, retention_ms=60_000)
    old = now_ms() - 600_000
    producer = log.producer()
    for i in range(30):
        producer.produce(name, b"o" * 200, key=f"old-{i}".encode(), timestamp_ms=old + i)
    producer.flush(30)
    time.sleep(0.4)
    for i in range(5):
        producer.produce(name, b"n" * 200, key=f"new-{i}".encode())
    producer.flush(30)

    eventually(lambda: log.describe_topic(name).partitions[0].start_offset > 0, log, what="retention by time")
    info = log.describe_topic(name).partitions[0]
    assert 0 < info.start_offset <= 30
    assert info.end_offset == 35
    kept = read_kept(log, name)
    assert info.start_offset <= kept[0].offset <= 30
    assert [r.offset for r in kept] == list(range(kept[0].offset, 35))
    assert [r.key for r in kept[-5:]] == [f"new-{i}".encode() for i in range(5)]


def test_compaction_keeps_the_last_value_per_key_and_tombstones_delete(log: EventLog, new_topic: NewTopic) -> None:
    name = new_topic(1, cleanup_policy="compact", retention_ms=None)
    writes = [(b"k1", b"a"), (b"k2", b"a"), (b"k3", b"a"), (b"k1", b"b"), (b"k2", None), (b"k1", b"c")]
    producer = log.producer()
    for key, value in writes:
        producer.produce(name, value, key=key)
    producer.flush(30)
    time.sleep(0.5)
    producer.send(name, b"x", key=b"roll")  # Kafka compacts closed segments only: this closes the first one
    superseded = {(b"k1", b"a"), (b"k1", b"b"), (b"k2", b"a")}
    reader = consumer(log, name)
    wait_assigned(reader)
    tp = TopicPartition(name, 0)
    state: dict[str, list[Record]] = {}

    def compacted() -> bool:
        reader.seek_to_beginning([tp])
        records: list[Record] = []
        deadline = time.monotonic() + 10
        while not records or records[-1].offset < 6:
            assert time.monotonic() < deadline, "could not read the topic back"
            records += reader.poll(0.2)
        state["records"] = records
        return not superseded & {(r.key, r.value) for r in records}

    eventually(compacted, log, what="compaction")
    records = state["records"]
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets))  # gaps, never reordering
    by_key = {r.key: (r.offset, r.value) for r in records}
    assert by_key[b"k1"] == (5, b"c")
    assert by_key[b"k3"] == (2, b"a")
    assert by_key[b"roll"] == (6, b"x")
    assert by_key.get(b"k2", (4, None)) == (4, None)  # only its tombstone may remain
    assert len(records) == len(by_key)
    assert log.describe_topic(name).partitions[0].end_offset == 7
    reader.close()


# --- properties (in-process backends; Kafka runs the example tests above) --------------------------


def record_ack(acks: dict[int, RecordMetadata], i: int, md: RecordMetadata | None, err: Exception | None) -> None:
    assert err is None and md is not None
    acks[i] = md


_PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(
    ops=st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=6)),
            st.binary(max_size=24),
            st.one_of(st.none(), st.integers(0, 2)),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_property_offsets_are_dense_and_ordered_per_partition(
    local_log: EventLog, ops: list[tuple[bytes | None, bytes, int | None]]
) -> None:
    name = unique("prop")
    local_log.create_topic(TopicSpec(name, 3))
    producer = local_log.producer()
    acks: dict[int, RecordMetadata] = {}
    for i, (key, value, partition) in enumerate(ops):
        producer.produce(name, value, key=key, partition=partition, on_delivery=partial(record_ack, acks, i))
    producer.flush()
    assert sorted(acks) == list(range(len(ops)))
    offsets: dict[int, list[int]] = defaultdict(list)
    for i, (key, _value, partition) in enumerate(ops):
        if partition is not None:
            assert acks[i].partition == partition
        elif key is not None:
            assert acks[i].partition == partition_for_key(key, 3)
        offsets[acks[i].partition].append(acks[i].offset)
    assert all(o == list(range(len(o))) for o in offsets.values())  # dense, in produce order
    records = read_all(local_log, name, len(ops))
    stored = {(acks[i].partition, acks[i].offset): (key, value) for i, (key, value, _p) in enumerate(ops)}
    assert {(r.partition, r.offset): (r.key, r.value) for r in records} == stored
    for p in range(3):
        assert [r.offset for r in records if r.partition == p] == offsets[p]  # read in order


@_PROPERTY
@given(
    n=st.integers(0, 25),
    actions=st.lists(
        st.one_of(
            st.tuples(st.just("poll"), st.integers(1, 8)),
            st.tuples(st.just("commit"), st.just(0)),
            st.tuples(st.just("seek"), st.integers(0, 25)),
            st.tuples(st.just("beginning"), st.just(0)),
            st.tuples(st.just("end"), st.just(0)),
            st.tuples(st.just("restart"), st.just(0)),
        ),
        max_size=15,
    ),
)
def test_property_commit_and_seek_follow_the_model(local_log: EventLog, n: int, actions: list[tuple[str, int]]) -> None:
    name = unique("prop")
    local_log.create_topic(TopicSpec(name, 1))
    producer = local_log.producer()
    for i in range(n):
        producer.produce(name, str(i).encode())
    producer.flush()
    group, tp = unique("g"), TopicPartition(name, 0)
    c = local_log.consumer(group, [name])
    position, committed = 0, None
    try:
        wait_assigned(c)
        for action, arg in actions:
            if action == "poll":
                want = min(arg, n - position)
                got = consume(c, want) if want else c.poll(0.02)
                assert [r.offset for r in got] == list(range(position, position + want))
                assert [r.value for r in got] == [str(o).encode() for o in range(position, position + want)]
                position += want
            elif action == "commit":
                c.commit()
                committed = position
            elif action == "seek":
                position = min(arg, n)
                c.seek(tp, position)
            elif action == "beginning":
                c.seek_to_beginning([tp])
                position = 0
            elif action == "end":
                c.seek_to_end([tp])
                position = n
            else:  # a new member of the group resumes at the committed offset
                c.close()
                c = local_log.consumer(group, [name])
                wait_assigned(c)
                position = committed if committed is not None else 0
            assert c.position(tp) == position
            assert c.committed([tp]) == {tp: committed}
    finally:
        c.close()


@_PROPERTY
@given(
    writes=st.lists(
        st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.one_of(st.none(), st.binary(min_size=1, max_size=8))),
        min_size=1,
        max_size=30,
    )
)
def test_property_compaction_keeps_exactly_the_last_record_per_key(
    local_log: EventLog, writes: list[tuple[bytes, bytes | None]]
) -> None:
    name = unique("prop")
    local_log.create_topic(TopicSpec(name, 1, cleanup_policy="compact", retention_ms=None))
    producer = local_log.producer()
    for key, value in writes:
        producer.produce(name, value, key=key)
    producer.flush()
    local_log.maintain()  # type: ignore[attr-defined]
    last = {key: (offset, value) for offset, (key, value) in enumerate(writes)}
    info = local_log.describe_topic(name).partitions[0]
    assert info.end_offset == len(writes)
    c = local_log.consumer(unique("g"), [name])
    records: list[Record] = []
    deadline = time.monotonic() + 10
    while not records or records[-1].offset < len(writes) - 1:  # the last write always stays
        assert time.monotonic() < deadline, f"read {records} only"
        records += c.poll(0.2)
    c.close()
    assert [r.offset for r in records] == sorted(r.offset for r in records)
    kept = {r.key: (r.offset, r.value) for r in records}
    assert len(kept) == len(records)  # at most one record per key
    for key, (offset, value) in last.items():
        if value is None:
            assert kept.get(key, (offset, None)) == (offset, None)  # a tombstone, or nothing
        else:
            assert kept[key] == (offset, value)
