"""The local scheduler with a fake inventory (2 GPUs, 4 CPUs) running real processes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kawa.config import KawaConfig
from kawa.errors import ResourceUnavailable
from kawa.ml.jobs import JobSpec, JobState, Scheduler
from kawa.ml.jobs.store import pid_alive
from tests.ml.helpers import make_config, wait_for


@pytest.fixture
def sched(config: KawaConfig) -> Iterator[Scheduler]:
    cfg = make_config(config, tracking=False, inventory={"cpus": 4, "gpus": 2, "memory": "8G"})
    scheduler = Scheduler(cfg)
    scheduler.start()
    yield scheduler
    scheduler.stop()


def _state(s: Scheduler, job_id: str) -> JobState:
    return s.get(job_id).state


def test_gpu_jobs_wait_start_and_get_disjoint_devices(sched: Scheduler, job_module: str, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    outs = [tmp_path / f"env{i}.json" for i in range(3)]
    jobs = [
        sched.submit(JobSpec.build(f"{job_module}:record_env", gpu=1, params={"out": str(o), "hold": str(hold)}))
        for o in outs
    ]
    # Two GPUs: the first two run, the third waits.
    wait_for(lambda: outs[0].exists() and outs[1].exists())
    time.sleep(0.3)
    assert _state(sched, jobs[2].id) is JobState.QUEUED
    assert not outs[2].exists()
    envs = [json.loads(o.read_text()) for o in outs[:2]]
    devices = {e["CUDA_VISIBLE_DEVICES"] for e in envs}
    assert devices == {"0", "1"}
    assert {e["KAWA_JOB_ID"] for e in envs} == {jobs[0].id, jobs[1].id}
    gpus_by_job = {j.id: sched.get(j.id).gpus for j in jobs[:2]}
    assert sorted(gpus_by_job.values()) == [(0,), (1,)]

    # Finishing the first frees its GPU for the third, and only that one.
    hold.touch()
    wait_for(lambda: all(_state(sched, j.id) is JobState.SUCCEEDED for j in jobs), timeout=30)
    third = json.loads(outs[2].read_text())
    assert third["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    assert len(third["CUDA_VISIBLE_DEVICES"].split(",")) == 1
    assert sched.get(jobs[2].id).started_at >= min(sched.get(j.id).finished_at for j in jobs[:2])  # type: ignore[operator]


def test_two_gpu_job_waits_for_both_and_cpu_job_sees_no_gpu(sched: Scheduler, job_module: str, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    one = sched.submit(
        JobSpec.build(f"{job_module}:record_env", gpu=1, params={"out": str(tmp_path / "a"), "hold": str(hold)})
    )
    both = sched.submit(JobSpec.build(f"{job_module}:record_env", gpu=2, params={"out": str(tmp_path / "b")}))
    # Another project's CPU job backfills past the waiting 2-GPU job (FIFO holds only within a project).
    cpu = sched.submit(
        JobSpec.build(f"{job_module}:record_env", cpu=2, params={"out": str(tmp_path / "c")}, project="other")
    )
    wait_for(lambda: _state(sched, cpu.id) is JobState.SUCCEEDED)
    assert json.loads((tmp_path / "c").read_text())["CUDA_VISIBLE_DEVICES"] == ""
    assert json.loads((tmp_path / "c").read_text())["OMP_NUM_THREADS"] == "2"
    assert _state(sched, both.id) is JobState.QUEUED  # needs both GPUs, one is taken
    hold.touch()
    wait_for(lambda: _state(sched, both.id) is JobState.SUCCEEDED)
    assert json.loads((tmp_path / "b").read_text())["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert _state(sched, one.id) is JobState.SUCCEEDED


def test_cpu_requests_queue_when_the_machine_is_full(sched: Scheduler, job_module: str, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    big = sched.submit(
        JobSpec.build(f"{job_module}:record_env", cpu=3, params={"out": str(tmp_path / "a"), "hold": str(hold)})
    )
    wait_for(lambda: (tmp_path / "a").exists())
    second = sched.submit(JobSpec.build(f"{job_module}:record_env", cpu=2, params={"out": str(tmp_path / "b")}))
    time.sleep(0.4)
    assert _state(sched, second.id) is JobState.QUEUED  # 3 + 2 > 4 CPUs
    hold.touch()
    wait_for(lambda: _state(sched, second.id) is JobState.SUCCEEDED)
    assert _state(sched, big.id) is JobState.SUCCEEDED


def test_cancel_kills_the_process_group(sched: Scheduler, job_module: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    job = sched.submit(JobSpec.build(f"{job_module}:spawn_and_sleep", params={"pidfile": str(pidfile)}))
    wait_for(lambda: pidfile.exists() and pidfile.read_text())
    grandchild = int(pidfile.read_text())
    leader = sched.get(job.id).pid
    assert pid_alive(grandchild) and pid_alive(leader)
    sched.cancel(job.id)
    done = wait_for(lambda: (j := sched.get(job.id)).state.finished and j)
    assert done.state is JobState.CANCELLED
    wait_for(lambda: not pid_alive(grandchild) and not pid_alive(leader), timeout=10)


def test_cancel_a_queued_job(sched: Scheduler, job_module: str, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    blockers = [
        sched.submit(
            JobSpec.build(f"{job_module}:record_env", gpu=1, params={"out": str(tmp_path / f"b{i}"), "hold": str(hold)})
        )
        for i in range(2)
    ]
    waiting = sched.submit(JobSpec.build(f"{job_module}:record_env", gpu=1, params={"out": str(tmp_path / "w")}))
    wait_for(lambda: all(_state(sched, b.id) is JobState.RUNNING for b in blockers))
    assert sched.cancel(waiting.id).state is JobState.CANCELLED
    hold.touch()
    wait_for(lambda: all(_state(sched, b.id) is JobState.SUCCEEDED for b in blockers))
    time.sleep(0.3)
    assert not (tmp_path / "w").exists()


def test_timeout(sched: Scheduler, job_module: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    job = sched.submit(JobSpec.build(f"{job_module}:spawn_and_sleep", params={"pidfile": str(pidfile)}, timeout_s=1.0))
    done = wait_for(lambda: (j := sched.get(job.id)).state.finished and j, timeout=20)
    assert done.state is JobState.TIMED_OUT
    assert "timed out after 1s" in (done.error or "")
    assert done.finished_at - done.started_at < 8  # type: ignore[operator]
    wait_for(lambda: not pid_alive(int(pidfile.read_text())), timeout=10)


def test_failure_and_logs(sched: Scheduler, job_module: str) -> None:
    job = sched.submit(JobSpec.build(f"{job_module}:fail"))
    done = wait_for(lambda: (j := sched.get(job.id)).state.finished and j)
    assert done.state is JobState.FAILED and done.exit_code == 1
    assert "ValueError: boom" in sched.log_path(job.id).read_text()


def test_command_entrypoint_gets_params(sched: Scheduler, tmp_path: Path) -> None:
    out = tmp_path / "params.json"
    cmd = f"sh -c 'echo \"$KAWA_JOB_PARAMS\" > {out}; echo hello from a command'"
    job = sched.submit(JobSpec.build(cmd, params={"lr": 0.1}))
    done = wait_for(lambda: (j := sched.get(job.id)).state.finished and j)
    assert done.state is JobState.SUCCEEDED
    assert json.loads(out.read_text()) == {"lr": 0.1}
    assert "hello from a command" in sched.log_path(job.id).read_text()


def test_requests_that_never_fit_are_refused(config: KawaConfig) -> None:
    no_gpu = Scheduler(make_config(config, tracking=False, inventory={"cpus": 4, "gpus": 0}))
    with pytest.raises(ResourceUnavailable, match=r"requested 1 GPU\(s\) but this machine has 0"):
        no_gpu.submit(JobSpec.build("x:y", gpu=1))
    with pytest.raises(ResourceUnavailable, match="requested 8 CPUs"):
        no_gpu.submit(JobSpec.build("x:y", cpu=8))
    assert no_gpu.jobs() == []


def test_inline_wait_runs_the_job(config: KawaConfig, job_module: str, tmp_path: Path) -> None:
    s = Scheduler(make_config(config, tracking=False, inventory={"cpus": 2, "gpus": 1}))
    job = s.submit(JobSpec.build(f"{job_module}:record_env", gpu=1, params={"out": str(tmp_path / "e")}))
    done = s.wait(job.id, timeout=30)
    assert done.state is JobState.SUCCEEDED
    assert json.loads((tmp_path / "e").read_text())["CUDA_VISIBLE_DEVICES"] == "0"
    assert json.loads((Path(os.environ["KAWA_HOME"]) / "jobs" / job.id / "result.json").read_text()) == {"ok": True}


def test_kawa_up_runs_the_scheduler(config: KawaConfig, job_module: str, tmp_path: Path) -> None:
    from kawa.ml.jobs import scheduler_service
    from kawa.platform import Platform, service_factories

    assert "kawa.ml.jobs:scheduler_service" in service_factories
    cfg = make_config(config, tracking=False, inventory={"cpus": 2, "gpus": 1})
    service = scheduler_service(Platform(cfg))
    assert service is not None
    # A job queued by another process (the CLI without --wait) is run by the service.
    job = Scheduler(cfg).submit(JobSpec.build(f"{job_module}:record_env", gpu=1, params={"out": str(tmp_path / "e")}))
    service.start()
    try:
        wait_for(lambda: service.get(job.id).state is JobState.SUCCEEDED)
    finally:
        service.stop()
    assert scheduler_service(Platform(make_config(cfg, scheduler=False))) is None
