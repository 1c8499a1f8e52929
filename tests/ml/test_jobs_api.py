"""The public jobs API: submit, wait, follow_progress and result, with a job reporting structured progress."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kawa.config import KawaConfig
from kawa.errors import JobError
from kawa.ml import jobs
from kawa.ml.jobs import JobState, Progress, ProgressReader
from tests.ml.helpers import make_config


@pytest.fixture
def progress_module(tmp_path: Path) -> str:
    (tmp_path / "progressfns.py").write_text(
        textwrap.dedent("""
        import time
        from pathlib import Path
        from kawa.ml import jobs

        def count(n=5, hold=None):
            for i in range(n):
                jobs.progress(i + 1, n, message="counting")
            # The progress file is the channel; the job's printed output is not parsed by anyone.
            print("kawa-progress counting 999/999", flush=True)
            deadline = time.monotonic() + 30
            while hold and not Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return {"counted": n}

        def fail():
            jobs.progress(1, 2, message="halfway")
            raise ValueError("boom")
        """)
    )
    return "progressfns"


@pytest.fixture
def cfg(config: KawaConfig) -> KawaConfig:
    return make_config(config, tracking=False, inventory={"cpus": 2, "gpus": 0})


def test_submit_follow_wait_result(cfg: KawaConfig, progress_module: str, tmp_path: Path) -> None:
    job = jobs.submit(f"{progress_module}:count", config=cfg, params={"n": 4}, cwd=str(tmp_path))
    assert jobs.get(job.id, config=cfg).state is JobState.QUEUED
    records = list(jobs.follow_progress(job.id, config=cfg, timeout=120))
    assert [(p.done, p.total, p.message) for p in records] == [(i, 4, "counting") for i in range(1, 5)]
    assert all(p.time > 0 for p in records) and records[-1].fraction == 1.0
    finished = jobs.wait(job.id, config=cfg, timeout=30)
    assert finished.state is JobState.SUCCEEDED
    assert jobs.result(job.id, config=cfg) == {"counted": 4}
    last = jobs.last_progress(job.id, config=cfg)
    assert last is not None and (last.done, last.total) == (4, 4)
    assert "kawa-progress counting 999/999" in jobs.log_tail(job.id, config=cfg)  # in the log, not the channel

    from kawa.platform import Platform
    from kawa.portal.sources.jobs import JobsSource

    platform = Platform(cfg)
    source = JobsSource(platform)  # the portal reads the same channel
    try:
        shown = source.progress(job.id)
        assert shown is not None and (shown.done, shown.total, shown.message) == (4, 4, "counting")
    finally:
        source.close()
        platform.stop()


def test_wait_reports_progress_of_a_failed_job(cfg: KawaConfig, progress_module: str, tmp_path: Path) -> None:
    seen: list[Progress] = []
    job = jobs.submit(f"{progress_module}:fail", config=cfg, cwd=str(tmp_path))
    finished = jobs.wait(job.id, config=cfg, timeout=120, on_progress=seen.append)
    assert finished.state is JobState.FAILED and "exited with code 1" in (finished.error or "")
    assert [(p.done, p.total, p.message) for p in seen] == [(1, 2, "halfway")]
    assert jobs.result(job.id, config=cfg) == {}
    assert "ValueError: boom" in jobs.log_tail(job.id, config=cfg)


def test_a_wait_that_times_out_cancels_what_it_started(cfg: KawaConfig, progress_module: str, tmp_path: Path) -> None:
    hold = tmp_path / "never"
    job = jobs.submit(f"{progress_module}:count", config=cfg, params={"hold": str(hold)}, cwd=str(tmp_path))
    with pytest.raises(JobError, match="still running after"):
        for p in jobs.follow_progress(job.id, config=cfg, timeout=None):
            if p.done == p.total:
                # The job is now holding; a short wait on it must give up and leave no orphan.
                jobs.wait(job.id, config=cfg, timeout=0.5)
    assert jobs.get(job.id, config=cfg).state is JobState.CANCELLED


def test_progress_outside_a_job_writes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KAWA_JOB_DIR", raising=False)
    assert jobs.progress(1, 2) is False
    monkeypatch.setenv("KAWA_JOB_DIR", str(tmp_path))
    assert jobs.progress(1, 2, message="a") is True
    reader = ProgressReader(tmp_path)
    with open(tmp_path / "progress.jsonl", "a") as f:
        f.write('{"done": 2, "total"')  # a record still being written is not read half
    assert [(p.done, p.message) for p in reader.read()] == [(1, "a")]
    with open(tmp_path / "progress.jsonl", "a") as f:
        f.write(': 2, "message": "b"}\n')
    assert [(p.done, p.message) for p in reader.read()] == [(2, "b")]
    assert reader.read() == []
