"""The public jobs API: submit a job, wait for it, follow its progress, read its result.

::

    from kawa.ml import jobs

    job = jobs.submit("mypkg.train:train", config=config, cpu=1, params={"epochs": 3})
    for p in jobs.follow_progress(job.id, config=config):
        print(p.message, p.done, p.total)
    done = jobs.wait(job.id, config=config, timeout=600)
    print(jobs.result(job.id, config=config))

Callers never drive the scheduler or read job folders: :func:`wait` and :func:`follow_progress` run the
local scheduler in the calling thread (claims are atomic across processes, so this is safe next to
``kawa up``'s scheduler, which may run the job instead) until the job is finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.errors import JobError
from kawa.ml.jobs.progress import Progress, ProgressReader, latest
from kawa.ml.jobs.scheduler import Scheduler
from kawa.ml.jobs.spec import JobSpec
from kawa.ml.jobs.store import Job, JobStore

if TYPE_CHECKING:
    from kawa.backends import Backends
    from kawa.config import KawaConfig


def _config(config: KawaConfig | Backends) -> KawaConfig:
    from kawa.config import KawaConfig

    return config if isinstance(config, KawaConfig) else config.config


def _store(config: KawaConfig) -> JobStore:
    return JobStore(Path(config.home).absolute() / "jobs")


def submit(job: JobSpec | str, *, config: KawaConfig | Backends, **build: Any) -> Job:
    """Queue ``job`` (a :class:`JobSpec`, or an entry point with :meth:`JobSpec.build` keywords such as
    ``cpu``, ``gpu``, ``params``, ``project``, ``timeout_s``); refused at once
    (:class:`~kawa.errors.ResourceUnavailable`) when this machine can never fit it, and
    (:class:`~kawa.errors.QuotaExceeded`) when it alone is over its project's quota."""
    spec = job if isinstance(job, JobSpec) else JobSpec.build(job, **build)
    scheduler = Scheduler(_config(config))
    try:
        return scheduler.submit(spec)
    finally:
        scheduler.store.close()


def find(name: str, *, config: KawaConfig | Backends) -> Job | None:
    """The newest job submitted with ``name`` (None when there is none): how a caller that names its jobs
    (the retraining loop) finds the job it submitted before a restart instead of submitting it again."""
    store = _store(_config(config))
    try:
        for job in store.jobs():
            if job.spec.name == name:
                return job
        return None
    finally:
        store.close()


def get(job_id: str, *, config: KawaConfig | Backends) -> Job:
    store = _store(_config(config))
    try:
        return store.get(job_id)
    finally:
        store.close()


def follow_progress(
    job_id: str, *, config: KawaConfig | Backends, timeout: float | None = None, drive: bool = True
) -> Iterator[Progress]:
    """Each progress record of ``job_id`` as it is written, until the job is finished. With ``drive``
    (default) the local scheduler runs in this thread meanwhile, so the job runs even without ``kawa up``;
    ``drive=False`` only reads (someone else runs the job). Raises :class:`JobError` past ``timeout``.
    Leaving early (the timeout, or the caller stops iterating) cancels a job this call started running, so
    no job is left without a scheduler to record its end."""
    cfg = _config(config)
    scheduler = Scheduler(cfg)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        reader = ProgressReader(scheduler.store.job_dir(scheduler.get(job_id).id))
        while True:
            if drive:
                scheduler.tick()
            job = scheduler.get(job_id)
            yield from reader.read()
            if job.state.finished and not scheduler.running():
                yield from reader.read()
                return
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(f"job {job_id} is still {job.state} after {timeout}s; `kawa jobs cancel {job_id}`")
            time.sleep(scheduler.tick_s)
    finally:
        if scheduler.running():
            scheduler.stop()  # left early (timeout, break): what this thread started is cancelled, not orphaned
        scheduler.store.close()


def wait(
    job_id: str,
    timeout: float | None = None,
    *,
    config: KawaConfig | Backends,
    on_progress: Callable[[Progress], None] | None = None,
) -> Job:
    """Run the local scheduler here until ``job_id`` is finished; returns the finished job (whatever its
    state). ``on_progress`` sees each progress record. Raises :class:`JobError` past ``timeout``."""
    for record in follow_progress(job_id, config=config, timeout=timeout):
        if on_progress is not None:
            on_progress(record)
    return get(job_id, config=config)


def result(job_id: str, *, config: KawaConfig | Backends) -> dict[str, Any]:
    """What the job's function returned (its JSON result), or ``{}`` when it returned nothing."""
    store = _store(_config(config))
    try:
        file = store.job_dir(store.get(job_id).id) / "result.json"
        data = json.loads(file.read_text()) if file.exists() else {}
    finally:
        store.close()
    return data if isinstance(data, dict) else {"value": data}


def last_progress(job_id: str, *, config: KawaConfig | Backends) -> Progress | None:
    """The job's latest progress record (None before its first)."""
    store = _store(_config(config))
    try:
        return latest(store.job_dir(store.get(job_id).id))
    finally:
        store.close()


def log_tail(job_id: str, *, config: KawaConfig | Backends, max_bytes: int = 64 * 1024) -> str:
    """The end of the job's output (stdout and stderr), for people; never parsed by Kawa."""
    store = _store(_config(config))
    try:
        path = store.log_path(store.get(job_id).id)
    finally:
        store.close()
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read()
    text = data.decode("utf-8", "replace")
    return text.split("\n", 1)[-1] if size > max_bytes else text
