"""Training jobs as the portal sees them, through :mod:`kawa.ml.jobs`' public API. The job table lives under
the Kawa home, so the portal lists and submits jobs whether or not the scheduler runs in its process."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from kawa.errors import NotConfigured

if TYPE_CHECKING:
    from kawa.ml.jobs import Job, JobSpec, Progress, Scheduler
    from kawa.ml.resources import Inventory
    from kawa.platform import Platform

NO_JOBS = "training jobs are not available: the ml extra is not installed (`pip install 'kawa[ml]'`)"


class JobsSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._scheduler: Scheduler | None = None
        self._lock = threading.Lock()

    def available(self) -> tuple[bool, str | None]:
        try:
            import kawa.ml.jobs  # noqa: F401
        except ImportError:
            return False, NO_JOBS
        return True, None

    def running_here(self) -> bool:
        return any(getattr(s, "name", "") == "job-scheduler" for s in self.platform.services)

    @property
    def scheduler(self) -> Scheduler:
        with self._lock:
            if self._scheduler is None:
                for service in self.platform.services:
                    if getattr(service, "name", "") == "job-scheduler":
                        self._scheduler = service  # type: ignore[assignment]
                        break
                else:
                    try:
                        from kawa.ml.jobs import Scheduler
                    except ImportError as exc:
                        raise NotConfigured(NO_JOBS) from exc
                    # Not started: it queues jobs and reads the table; a scheduler elsewhere runs them.
                    self._scheduler = Scheduler(self.platform.config)
            assert self._scheduler is not None
            return self._scheduler

    def jobs(self, limit: int = 200) -> list[Job]:
        return list(self.scheduler.jobs(limit=limit))

    def job(self, job_id: str) -> Job:
        return self.scheduler.get(job_id)

    def submit(self, spec: JobSpec) -> Job:
        return self.scheduler.submit(spec)

    def cancel(self, job_id: str) -> Job:
        return self.scheduler.cancel(job_id)

    def inventory(self) -> Inventory:
        return self.scheduler.inventory

    def log_tail(self, job_id: str, max_bytes: int = 64 * 1024) -> str:
        from kawa.ml import jobs

        return jobs.log_tail(job_id, config=self.platform.config, max_bytes=max_bytes)

    def progress(self, job_id: str) -> Progress | None:
        """The job's latest record on its progress channel (``jobs.progress`` in the job), or None."""
        from kawa.ml import jobs

        return jobs.last_progress(job_id, config=self.platform.config)

    def build_spec(self, **kwargs: Any) -> JobSpec:
        from kawa.ml.jobs import JobSpec

        return JobSpec.build(**kwargs)

    def close(self) -> None:
        with self._lock:
            if self._scheduler is not None and not self.running_here():
                self._scheduler.store.close()
            self._scheduler = None
