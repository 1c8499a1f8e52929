"""The ``storage_bytes`` quota: the pure rule, the store that keeps it on every backend, and a function whose
writes meet it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kawa import deadletter
from kawa.backends import given_backends
from kawa.errors import ProjectError, StorageQuotaExceeded
from kawa.events import CloudEvent
from kawa.functions import App, Context, FunctionHost
from kawa.functions.dedupe import MemoryDedupeStore
from kawa.log.base import EventLog, TopicSpec
from kawa.projects.core import bucket_project
from kawa.projects.registry import ProjectRegistry
from kawa.store import ObjectStore, iter_objects, open_store
from kawa.store.quota import QuotaStore, StorageLimits, admit, measure, refusal
from tests.functions.conftest import FAST, events, produce, read_all, wait_for
from tests.store.conftest import make_config


def test_the_rule() -> None:
    assert admit(None, 10**12, 0, 10**12)
    assert admit(100, 60, 30, 10) and not admit(100, 60, 30, 11)
    assert admit(100, 500, 0, 0) and admit(100, 500, 0, -50), "shrinking always fits"


def test_a_bucket_belongs_to_its_registered_prefix() -> None:
    assert bucket_project("team--images", {"default", "team"}) == "team"
    assert bucket_project("other--images", {"default", "team"}) == "default"
    assert bucket_project("images", {"team"}) == "default"
    assert bucket_project("team--", {"team"}) == "default"


def test_the_refusal_says_what_to_do() -> None:
    message = refusal("team", 1024, 1000, 100, "the put of team--b/k")
    assert "project 'team' is over its storage quota" in message
    assert "may hold 1 KiB" in message and "holds 1e+03 bytes" not in message
    assert "kawa projects set-quota team --storage-bytes 1100" in message


@pytest.fixture
def team() -> str:
    """A project of this test alone: the S3 server is shared by the session, and a project's bytes are those of
    every bucket with its prefix."""
    return f"t{uuid.uuid4().hex[:10]}"


def _limited(inner: ObjectStore, team: str, limit: int | None, **kwargs: float) -> QuotaStore:
    return QuotaStore(inner, lambda: StorageLimits({"default": None, team: limit}), **kwargs)


def _bucket(store: ObjectStore, project: str) -> str:
    name = f"{project}--b-{uuid.uuid4().hex[:8]}"
    store.create_bucket(name)
    return name


def _held(store: ObjectStore, bucket: str) -> int:
    return sum(o.size for o in iter_objects(store, bucket))


def test_puts_fit_until_the_quota_then_are_refused_on_every_backend(store: ObjectStore, team: str) -> None:
    quota = _limited(store, team, 1000)
    bucket = _bucket(store, team)
    quota.put(bucket, "a", b"x" * 600)
    quota.put(bucket, "a", b"x" * 900)  # replacing counts only what it grows
    with pytest.raises(StorageQuotaExceeded, match=r"may hold 1,000 bytes.*holds 900 bytes.*add 101 bytes") as caught:
        quota.put(bucket, "b", b"y" * 101)
    assert "--storage-bytes 1001" in str(caught.value)
    assert [o.key for o in iter_objects(store, bucket)] == ["a"]
    quota.put(bucket, "b", b"y" * 100)
    assert _held(store, bucket) == 1000
    unlimited = _bucket(store, "default")
    quota.put(unlimited, "big", b"z" * 5000)  # default has no limit


def test_a_streamed_put_past_the_quota_stores_nothing_and_keeps_the_old_object(store: ObjectStore, team: str) -> None:
    quota = _limited(store, team, 10_000)
    bucket = _bucket(store, team)
    quota.put(bucket, "k", b"old")

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"s" * 1000

    refused = r"holds 3 bytes; the put of .* would add at least 10.7 KiB"
    with pytest.raises(StorageQuotaExceeded, match=refused) as caught:
        quota.put(bucket, "k", chunks())
    assert "--storage-bytes 11000" in str(caught.value)
    with store.get(bucket, "k") as reader:
        assert reader.read() == b"old"
    assert _held(store, bucket) == 3
    assert quota.put(bucket, "k", iter([b"n" * 5000, b"n" * 4000])).size == 9000
    assert quota.used(team) == 9000


def test_copies_and_deletes_count(store: ObjectStore, team: str) -> None:
    quota = _limited(store, team, 1000)
    bucket, free = _bucket(store, team), _bucket(store, "default")
    store.put(free, "src", b"c" * 700)
    quota.copy(free, "src", bucket, "one")
    with pytest.raises(StorageQuotaExceeded, match="the copy to"):
        quota.copy(free, "src", bucket, "two")
    quota.delete(bucket, "one")
    assert quota.used(team) == 0
    quota.copy(free, "src", bucket, "two")
    assert _held(store, bucket) == 700


def test_what_others_deleted_or_a_raised_quota_counts_before_a_refusal(local_store: ObjectStore, team: str) -> None:
    limits: dict[str, int | None] = {"default": None, team: 1000}
    quota = QuotaStore(local_store, lambda: StorageLimits(dict(limits)), refresh_s=3600)
    bucket = _bucket(local_store, team)
    quota.put(bucket, "a", b"a" * 1000)
    local_store.delete(bucket, "a")  # another process, behind this store's back
    quota.put(bucket, "b", b"b" * 1000)  # measured again before refusing: it fits
    limits[team] = 2500
    quota.put(bucket, "c", b"c" * 1500)  # the raised limit is read again before refusing
    limits[team] = None
    quota.put(bucket, "d", b"d" * 10_000)
    assert _held(local_store, bucket) == 12_500


def test_concurrent_puts_never_go_over_together(local_store: ObjectStore, team: str) -> None:
    quota = _limited(local_store, team, 10 * 1000)
    bucket = _bucket(local_store, team)
    stored, refused = [], []
    lock, start = threading.Lock(), threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        for i in range(5):
            try:
                if i % 2:
                    quota.put(bucket, f"{n}-{i}", iter([b"x" * 500, b"x" * 500]))
                else:
                    quota.put(bucket, f"{n}-{i}", b"x" * 1000)
                with lock:
                    stored.append((n, i))
            except StorageQuotaExceeded:
                with lock:
                    refused.append((n, i))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stored) == 10 and len(refused) == 30
    assert _held(local_store, bucket) == 10_000 == quota.used(team, fresh=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 3000), st.lists(st.tuples(st.sampled_from("abcd"), st.integers(-1, 1500)), max_size=25))
def test_a_write_is_refused_exactly_when_it_would_go_over(tmp_path: Path, team: str, limit: int,
                                                          writes: list[tuple[str, int]]) -> None:  # fmt: skip
    inner = open_store("memory:", make_config(tmp_path / ".kawa"))
    quota = _limited(inner, team, limit)
    bucket = _bucket(inner, team)
    sizes: dict[str, int] = {}
    for key, size in writes:
        held = sum(sizes.values())
        if size < 0:
            quota.delete(bucket, key, missing_ok=True)
            sizes.pop(key, None)
            continue
        fits = held - sizes.get(key, 0) + size <= limit or size <= sizes.get(key, 0)
        try:
            quota.put(bucket, key, b"v" * size)
            sizes[key] = size
            assert fits
        except StorageQuotaExceeded:
            assert not fits
        assert _held(inner, bucket) == sum(sizes.values()) == quota.used(team)
        assert sum(sizes.values()) <= max(limit, held)


def test_measure_counts_only_the_projects_buckets(store: ObjectStore, team: str) -> None:
    mine, theirs = _bucket(store, team), _bucket(store, "default")
    store.put(mine, "a", b"1" * 10)
    store.put(mine, "b/c", b"2" * 20)
    store.put(theirs, "a", b"3" * 40)
    limits = StorageLimits({"default": None, team: 100})
    assert measure(store, team, limits) == 30


def test_a_function_whose_write_meets_the_quota_dead_letters_its_event_and_goes_on(
    tmp_path: Path, event_log: EventLog
) -> None:
    config = make_config(tmp_path / ".kawa", uri="file:", quota_refresh_s=3600)
    registry = ProjectRegistry.in_home(Path(config.home))
    registry.create("team")
    registry.set_quota("team", storage_bytes=3 * 1000)
    app = App("q")

    @app.function(topic="team.in", name="save", retries=2)
    def save(event: CloudEvent, ctx: Context) -> None:
        ctx.store.put("team--out", f"{event.get_source()}-{event.get_id()}.bin".replace("/", ""), b"r" * 1000)

    event_log.create_topic(TopicSpec("team.in"))
    with given_backends(config, log=event_log) as backends:
        backends.store.create_bucket("team--out")
        produce(event_log, "team.in", events(5))
        with FunctionHost(app, backends=backends, dedupe=MemoryDedupeStore(), options=FAST) as host:
            stats = lambda: host.metrics()["q.save"]  # noqa: E731
            wait_for(lambda: stats().succeeded == 3 and stats().dead_lettered == 2, timeout=30)
            dead = read_all(event_log, "team.in.dlq", 2)
            reasons = [deadletter.read_reason(r.headers) for r in dead]
            assert {r.reason for r in reasons if r is not None} == {"over-quota"}
            message = reasons[0].message if reasons[0] is not None else ""
            assert "project 'team' is over its storage quota" in message and "set-quota team" in message
            assert all(r is not None and r.attempts == 1 for r in reasons), "no retry can fix it"
            # Raising the quota lets the next events through: the host keeps running.
            registry.set_quota("team", storage_bytes=None)
            produce(event_log, "team.in", events(2, source="/tests/after"))
            wait_for(lambda: stats().succeeded == 5, timeout=30)
        assert sum(1 for _ in iter_objects(backends.store, "team--out")) == 5


def test_an_unreadable_registry_keeps_the_limits_read_before(local_store: ObjectStore, team: str) -> None:
    reads: list[StorageLimits | Exception] = [StorageLimits({"default": None, team: 100})]

    def read() -> StorageLimits:
        found = reads[-1]
        if isinstance(found, Exception):
            raise found
        return found

    quota = QuotaStore(local_store, read, refresh_s=3600)
    bucket = _bucket(local_store, team)
    quota.put(bucket, "a", b"a" * 100)
    reads.append(ProjectError("projects.json is not valid JSON; restore it or move it away"))
    with pytest.raises(StorageQuotaExceeded):  # the re-read before refusing fails: the old limit still holds
        quota.put(bucket, "b", b"b")
    fresh = QuotaStore(local_store, read)
    with pytest.raises(ProjectError, match="restore it"):  # nothing read before: the registry's own error
        fresh.put(bucket, "c", b"c")
