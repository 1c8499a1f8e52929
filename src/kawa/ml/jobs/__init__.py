"""Training jobs: specs with resource requests, the local scheduler, Kubernetes manifests.

Python API (see :mod:`kawa.ml.jobs.api`; no scheduler loop or job folder to handle)::

    from kawa.ml import jobs
    job = jobs.submit("trainers:train", config=config, gpu=1, params={"epochs": 3})
    for p in jobs.follow_progress(job.id, config=config):   # runs it here unless `kawa up` does
        print(f"{p.message} {p.done}/{p.total}")
    jobs.wait(job.id, config=config); jobs.result(job.id, config=config)

Inside the job, ``jobs.progress(done, total, message=...)`` feeds that channel (:mod:`kawa.ml.jobs.progress`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kawa.ml.jobs.api import find, follow_progress, get, last_progress, log_tail, result, submit, wait
from kawa.ml.jobs.k8s import render_job, render_yaml
from kawa.ml.jobs.progress import JobContext, Progress, ProgressReader, context, progress
from kawa.ml.jobs.scheduler import Scheduler
from kawa.ml.jobs.spec import JobSpec, JobState, Resources, parse_params
from kawa.ml.jobs.store import Job, JobStore

if TYPE_CHECKING:
    from kawa.platform import Platform

__all__ = [
    "Job",
    "JobContext",
    "JobSpec",
    "JobState",
    "JobStore",
    "Progress",
    "ProgressReader",
    "Resources",
    "Scheduler",
    "context",
    "find",
    "follow_progress",
    "get",
    "last_progress",
    "log_tail",
    "parse_params",
    "progress",
    "render_job",
    "render_yaml",
    "result",
    "scheduler_service",
    "submit",
    "wait",
]


def scheduler_service(platform: Platform) -> Scheduler | None:
    """``kawa up``'s job scheduler (None when ``ml.scheduler`` is off)."""
    if not platform.config.ml.scheduler:
        return None
    return Scheduler(platform.config)
