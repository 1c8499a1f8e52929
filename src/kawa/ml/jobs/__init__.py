"""Training jobs: specs with resource requests, the local scheduler, Kubernetes manifests.

Python API::

    from kawa.ml.jobs import JobSpec, Scheduler
    sched = Scheduler(config)
    job = sched.submit(JobSpec.build("trainers:train", gpu=1, params={"epochs": 3}))
    sched.wait(job.id)           # or let `kawa up` run it
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kawa.ml.jobs.k8s import render_job, render_yaml
from kawa.ml.jobs.scheduler import Scheduler
from kawa.ml.jobs.spec import JobSpec, JobState, Resources, parse_params
from kawa.ml.jobs.store import Job, JobStore

if TYPE_CHECKING:
    from kawa.platform import Platform

__all__ = [
    "Job",
    "JobSpec",
    "JobState",
    "JobStore",
    "Resources",
    "Scheduler",
    "parse_params",
    "render_job",
    "render_yaml",
    "scheduler_service",
]


def scheduler_service(platform: Platform) -> Scheduler | None:
    """``kawa up``'s job scheduler (None when ``ml.scheduler`` is off)."""
    if not platform.config.ml.scheduler:
        return None
    return Scheduler(platform.config)
