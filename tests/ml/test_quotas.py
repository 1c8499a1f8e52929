"""Project quotas where jobs are admitted: the pure placement rule, and the scheduler running real processes."""

from __future__ import annotations

import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.config import KawaConfig
from kawa.errors import ProjectError, QuotaExceeded
from kawa.ml.jobs import JobSpec, JobState, Scheduler
from kawa.ml.jobs.policy import Allocated, Excess, Limits, MiB, Use, Waiting, place
from kawa.ml.jobs.spec import ACTIVE, Resources
from kawa.ml.resources import Gpu, Inventory
from kawa.projects.registry import ProjectRegistry
from tests.ml.helpers import make_config, wait_for

INV = Inventory(8, 32 * 1024**3, tuple(Gpu(i, f"g{i}", "fake", 1) for i in range(4)), "test")


def _w(i: int, project: str = "a", cpu: float = 1, gpus: int = 0, mem_mb: int = 0, at: float = 0.0) -> Waiting:
    return Waiting(f"j{i}", i, project, Resources(cpu, mem_mb * MiB, gpus), at)


# --- the pure rule ----------------------------------------------------------------------------------------


def test_concurrent_jobs_limit_holds_its_project_back_and_lets_others_on() -> None:
    queued = [_w(1, "a"), _w(2, "a"), _w(3, "b"), _w(4, "b")]
    placed = place(queued, [], INV, now=0, limits={"a": Limits(concurrent_jobs=1)})
    assert sorted(p.id for p in placed) == ["j1", "j3", "j4"]  # b has no limits


def test_running_jobs_count_against_the_quota() -> None:
    running = [Allocated("a", Resources(2, 0, 1), (0,))]
    queued = [_w(1, "a", gpus=1), _w(2, "a", cpu=1)]
    assert place(queued, running, INV, now=0, limits={"a": Limits(gpus=1)}) == []  # FIFO: j1 waits, so j2 does
    assert [p.id for p in place(queued, running, INV, now=0, limits={"a": Limits(gpus=2)})] == ["j1", "j2"]
    # 2 running + 1 for j1 fits 3.5 CPUs; j2 would make it 4
    assert [p.id for p in place(queued, running, INV, now=0, limits={"a": Limits(cpus=3.5)})] == ["j1"]


def test_memory_is_limited_in_mb() -> None:
    queued = [_w(1, "a", mem_mb=600), _w(2, "a", mem_mb=600)]
    assert [p.id for p in place(queued, [], INV, now=0, limits={"a": Limits(memory_mb=1000)})] == ["j1"]
    assert [p.id for p in place(queued, [], INV, now=0, limits={"a": Limits(memory_mb=1200)})] == ["j1", "j2"]


def test_a_starving_head_over_its_quota_does_not_reserve_the_machine() -> None:
    """Without a quota a starving head stops everyone else; a head that waits for its own quota must not."""
    running = [Allocated("a", Resources(1, 0, 1), (0,)), Allocated("x", Resources(1, 0, 3), (1, 2, 3))]
    queued = [_w(1, "a", gpus=1, at=0.0), _w(3, "c", at=5.0)]  # a's head has waited 1,000 s for a GPU
    # No GPU is free and a's head starves: nothing else starts until it can (the reservation rule) …
    assert place(queued, running, INV, now=1000, starvation_s=300) == []
    # … but when a's own quota holds it back, reserving the machine would stall everyone: c starts
    placed = place(queued, running, INV, now=1000, starvation_s=300, limits={"a": Limits(gpus=1)})
    assert [p.id for p in placed] == ["j3"]


def test_the_first_limit_gone_over_is_named_with_its_flag() -> None:
    excess = Limits(gpus=1, cpus=2).exceeded(Use().plus(Resources(4, 0, 2)))
    assert excess == Excess("gpus", 1.0, 2.0)
    text = excess.explain("team-a")
    assert "quota of 1 gpus" in text and "asks for 2" in text and "kawa projects set-quota team-a --gpus 2" in text
    assert Limits(concurrent_jobs=0).exceeded(Use().plus(Resources())) == Excess("concurrent_jobs", 0.0, 1.0)
    assert Limits().exceeded(Use().plus(Resources(64, 10**12, 8))) is None  # no limits


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 4), st.integers(0, 2), st.integers(0, 3)), max_size=14),
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 2), st.integers(0, 1)), max_size=3),
    st.dictionaries(
        st.sampled_from("abc"),
        st.builds(
            Limits,
            st.none() | st.floats(0, 6),
            st.none() | st.integers(0, 3),
            st.none() | st.integers(0, 2500),
            st.none() | st.integers(0, 3),
        ),
    ),
)
def test_no_placement_takes_a_project_over_its_limits(
    jobs: list[tuple[str, int, int, int]], running_spec: list[tuple[str, int, int]], limits: dict[str, Limits]
) -> None:
    running: list[Allocated] = []
    free, cpu_used = [0, 1, 2, 3], 0
    for project, cpu, gpus in running_spec:
        if gpus <= len(free) and cpu_used + cpu <= INV.cpus:
            running.append(Allocated(project, Resources(cpu, 0, gpus), tuple(free[:gpus])))
            del free[:gpus]
            cpu_used += cpu
    queued = [_w(i, p, cpu, g, mem_mb=m * 500) for i, (p, cpu, g, m) in enumerate(jobs)]
    by_id = {w.id: w for w in queued}
    placed = place(queued, running, INV, now=0, limits=limits)
    for project, limit in limits.items():
        mine = [by_id[p.id] for p in placed if by_id[p.id].project == project]
        if not mine:
            continue  # running jobs alone may be over a lowered quota; then nothing new starts
        use = Use()
        for a in running:
            use = use.plus(a.resources) if a.project == project else use
        for w in mine:
            use = use.plus(w.resources)
        assert limit.exceeded(use) is None
        queue = [w.id for w in queued if w.project == project]
        assert [w.id for w in mine] == queue[: len(mine)]  # FIFO inside the project still holds


# --- the scheduler ----------------------------------------------------------------------------------------

JOBS = textwrap.dedent('''
    import json, time
    from pathlib import Path

    def run(marker, release):
        """Record the start, wait until RELEASE exists, record the end."""
        Path(marker + ".start").write_text(json.dumps(time.time()))
        deadline = time.monotonic() + 120
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        Path(marker + ".end").write_text(json.dumps(time.time()))
''')


@pytest.fixture
def cfg(config: KawaConfig, tmp_path: Path) -> KawaConfig:
    (tmp_path / "quotafns.py").write_text(JOBS)
    return make_config(config, tracking=False, inventory={"cpus": 8, "gpus": 2, "memory": "16G"})


def _spec(tmp_path: Path, name: str, project: str = "team-a", **build: object) -> JobSpec:
    params = {"marker": str(tmp_path / name), "release": str(tmp_path / f"{name}.release")}
    return JobSpec.build("quotafns:run", params=params, project=project, cwd=str(tmp_path), **build)  # type: ignore[arg-type]


def _registry(cfg: KawaConfig) -> ProjectRegistry:
    return ProjectRegistry.in_home(Path(cfg.home).absolute())


def test_quota_holds_under_concurrent_submission_with_two_schedulers(cfg: KawaConfig, tmp_path: Path) -> None:
    registry = _registry(cfg)
    registry.create("team-a")
    registry.set_quota("team-a", concurrent_jobs=2, cpus=None, memory_mb=None)
    names = [f"a{i}" for i in range(6)]
    barrier = threading.Barrier(len(names))

    def submit(name: str) -> str:
        barrier.wait()  # six clients submit at the same moment
        return Scheduler(cfg).submit(_spec(tmp_path, name)).id

    with ThreadPoolExecutor(len(names)) as pool:
        ids = list(pool.map(submit, names))
    other = Scheduler(cfg).submit(_spec(tmp_path, "b0", project="team-b"))  # not registered: no quota
    first, second = Scheduler(cfg), Scheduler(cfg)  # two scheduler processes on one home, as two `kawa up`s
    first.start()
    second.start()
    try:
        released: list[str] = []
        held_at_quota = 0

        def running() -> list[str]:  # started, not yet released, oldest first
            return [n for n in names if (tmp_path / f"{n}.start").exists() and n not in released]

        while len(released) < len(names):
            expected = min(2, len(names) - len(released))
            wait_for(lambda n=expected: len(running()) >= n, timeout=60, what=f"{expected} team-a jobs running")
            active = [j for j in first.jobs() if j.project == "team-a" and j.state in ACTIVE]
            assert len(active) <= 2
            assert len(running()) == expected
            if expected == 2:
                held_at_quota += 1
            if not released:  # team-a is at its quota and team-b still starts beside it
                wait_for(lambda: (tmp_path / "b0.start").exists(), timeout=60)
                (tmp_path / "b0.release").touch()
            oldest = running()[0]
            (tmp_path / f"{oldest}.release").touch()
            released.append(oldest)
        wait_for(lambda: all(first.get(i).state is JobState.SUCCEEDED for i in [*ids, other.id]), timeout=60)
    finally:
        first.stop()
        second.stop()
    assert held_at_quota >= 4  # it ran two at a time, not one
    # The jobs' own clocks: at no instant did three team-a processes run.
    spans = [(float((tmp_path / f"{n}.start").read_text()), float((tmp_path / f"{n}.end").read_text())) for n in names]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2


def test_a_job_over_its_quota_alone_is_refused_at_submit_and_nothing_is_queued(cfg: KawaConfig, tmp_path: Path) -> None:
    registry = _registry(cfg)
    registry.create("team-a")
    registry.set_quota("team-a", gpus=1, memory_mb=1024)
    scheduler = Scheduler(cfg)
    with pytest.raises(QuotaExceeded, match=r"quota of 1 gpus .* asks for 2; .*set-quota team-a --gpus 2"):
        scheduler.submit(_spec(tmp_path, "big", gpu=2))
    with pytest.raises(QuotaExceeded, match=r"quota of 1024 memory_mb .* asks for 2048"):
        scheduler.submit(_spec(tmp_path, "fat", mem="2G"))
    registry.set_quota("team-a", concurrent_jobs=0)
    with pytest.raises(QuotaExceeded, match="concurrent_jobs"):
        scheduler.submit(_spec(tmp_path, "any"))
    assert scheduler.jobs() == []
    # The default project has no limits until an admin sets some: today's single-user use is unchanged.
    assert scheduler.submit(_spec(tmp_path, "mine", project="default", gpu=2)).state is JobState.QUEUED
    scheduler.store.close()


def test_a_raised_quota_applies_at_the_next_round(cfg: KawaConfig, tmp_path: Path) -> None:
    registry = _registry(cfg)
    registry.create("team-a")
    registry.set_quota("team-a", cpus=1)
    scheduler = Scheduler(cfg)  # driven round by round here: no background loop, no timing
    one, two = (scheduler.submit(_spec(tmp_path, n)) for n in ("one", "two"))
    try:
        scheduler.tick()
        scheduler.tick()
        assert scheduler.get(one.id).state in ACTIVE
        assert scheduler.get(two.id).state is JobState.QUEUED  # 1 + 1 CPUs > the quota of 1
        registry.set_quota("team-a", cpus=2)
        scheduler.tick()
        assert scheduler.get(two.id).state in ACTIVE
        for name in ("one", "two"):
            (tmp_path / f"{name}.release").touch()
        wait_for(lambda: (scheduler.tick(), scheduler.get(two.id).state)[1] is JobState.SUCCEEDED, timeout=60)
    finally:
        scheduler.stop()


def test_an_unreadable_registry_starts_nothing_until_it_is_restored(cfg: KawaConfig, tmp_path: Path) -> None:
    registry = _registry(cfg)
    registry.create("team-a")
    scheduler = Scheduler(cfg)
    job = scheduler.submit(_spec(tmp_path, "one"))
    good = registry.path.read_text()
    registry.path.write_text("{ not json")
    try:
        with pytest.raises(ProjectError, match=r"not valid JSON.*restore it"):
            scheduler.submit(_spec(tmp_path, "two"))
        scheduler.tick()
        assert scheduler.get(job.id).state is JobState.QUEUED  # quotas cannot be checked: fail closed
        registry.path.write_text(good)
        scheduler.tick()
        assert scheduler.get(job.id).state in ACTIVE
        (tmp_path / "one.release").touch()
        wait_for(lambda: (scheduler.tick(), scheduler.get(job.id).state)[1] is JobState.SUCCEEDED, timeout=60)
    finally:
        scheduler.stop()
