"""The ``function_replicas`` quota: the pure grant rule, and a host that keeps a project's functions under it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kawa.config import load_config
from kawa.errors import ReplicaQuotaExceeded
from kawa.events import CloudEvent
from kawa.functions import App, Context, FunctionHost
from kawa.functions.dedupe import MemoryDedupeStore
from kawa.functions.quota import ReplicaBudget, Share, floors_over, grant
from kawa.log.base import EventLog, TopicSpec
from kawa.projects.registry import ProjectRegistry
from tests.functions.conftest import FAST, events, produce, wait_for


def test_no_limit_grants_what_is_asked() -> None:
    assert grant(None, 7, [Share(100, 3)]) == 7


def test_the_others_floors_are_reserved_even_when_they_hold_less() -> None:
    assert grant(4, 9, [Share(held=0, floor=1), Share(held=2, floor=1)]) == 1
    assert grant(4, 9, [Share(held=5, floor=0)]) == 0


@given(
    st.integers(0, 12).flatmap(
        lambda limit: st.tuples(
            st.just(limit),
            st.lists(st.integers(0, 3), min_size=1, max_size=4).filter(lambda floors: sum(floors) <= limit),
        )
    ),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 15)), max_size=40),
)
def test_a_project_never_holds_more_than_its_quota_and_each_floor_is_kept(
    limit_floors: tuple[int, list[int]], claims: list[tuple[int, int]]
) -> None:
    limit, floor_list = limit_floors
    names = [f"a.f{i}" for i in range(len(floor_list))]
    floors = dict(zip(names, floor_list, strict=True))
    budget = ReplicaBudget({"p": limit}, dict.fromkeys(names, "p"), floors)
    for index, extra in claims:
        name = names[index % len(names)]
        want = floors[name] + extra  # the autoscaler never asks below min_scale
        got = budget.claim(name, want)
        assert budget.held("p") <= limit
        assert floors[name] <= got <= want


def test_floors_over_the_quota_are_explained() -> None:
    assert floors_over("p", None, {"a.f": 9}) is None
    assert floors_over("p", 3, {"a.f": 1, "a.g": 2}) is None
    message = floors_over("p", 3, {"a.f": 2, "a.g": 2})
    assert message is not None
    assert "quota of 3 function replicas" in message and "asks for 4" in message
    assert "kawa projects set-quota p --function-replicas 4" in message


def _registry() -> ProjectRegistry:
    return ProjectRegistry.in_home(Path(load_config().home).absolute())


def _blocking_app(release: threading.Event, peak: list[int]) -> App:
    app = App("q")
    lock = threading.Lock()

    def work(event: CloudEvent, ctx: Context) -> None:
        with lock:
            peak[0] += 1
            peak[1] = max(peak)
        release.wait(30)
        with lock:
            peak[0] -= 1

    for name in ("a", "b"):
        app.function(topic=f"team.{name}", name=name, concurrency=1, max_scale=4, stable_window_s=1.0)(work)
    return app


def test_a_host_keeps_a_projects_functions_within_its_replica_quota(memlog: EventLog) -> None:
    registry = _registry()
    registry.create("team")
    registry.set_quota("team", function_replicas=3)
    release, peak = threading.Event(), [0, 0]
    app = _blocking_app(release, peak)
    for name in ("a", "b"):
        memlog.create_topic(TopicSpec(f"team.{name}"))
        produce(memlog, f"team.{name}", events(8))
    with FunctionHost(app, log=memlog, config=load_config(), dedupe=MemoryDedupeStore(), options=FAST) as host:
        stats = lambda: host.metrics().values()  # noqa: E731
        # The autoscalers ask for four each; the quota grants three in all.
        wait_for(lambda: all(s.desired_replicas == 4 for s in stats()) and sum(s.replicas for s in stats()) == 3)
        wait_for(lambda: peak[0] == 3)
        assert peak[1] == 3
        release.set()
        wait_for(lambda: sum(s.succeeded for s in stats()) == 16, timeout=30)
    assert peak[1] == 3, "never more invocations at once than the quota's replicas (one each)"


def test_without_a_quota_the_same_functions_scale_past_it(memlog: EventLog) -> None:
    _registry().create("team")
    _registry().set_quota("team", function_replicas=None)
    release, peak = threading.Event(), [0, 0]
    app = _blocking_app(release, peak)
    for name in ("a", "b"):
        memlog.create_topic(TopicSpec(f"team.{name}"))
        produce(memlog, f"team.{name}", events(8))
    with FunctionHost(app, log=memlog, config=load_config(), dedupe=MemoryDedupeStore(), options=FAST) as host:
        wait_for(lambda: peak[0] == 8)
        release.set()
        wait_for(lambda: sum(s.succeeded for s in host.metrics().values()) == 16, timeout=30)


def test_a_host_refuses_floors_over_the_quota_with_the_fix(memlog: EventLog) -> None:
    registry = _registry()
    registry.create("team")
    registry.set_quota("team", function_replicas=1)
    app = App("q")

    @app.function(topic="team.a", min_scale=2)
    def handle(event: CloudEvent, ctx: Context) -> None: ...

    memlog.create_topic(TopicSpec("team.a"))
    with pytest.raises(ReplicaQuotaExceeded, match="quota of 1 function replicas") as caught:
        FunctionHost(app, log=memlog, config=load_config(), dedupe=MemoryDedupeStore(), options=FAST).start()
    assert "--function-replicas 2" in str(caught.value)
