"""The local scheduler: owns this machine's CPUs, memory and GPUs and runs queued jobs when they fit.

Guarantees:

- A request that can never fit this machine is refused at submit (:class:`ResourceUnavailable`) — a GPU job
  is never silently run on the CPU.
- A job starts only when its request fits next to every active job (of any scheduler process on this home).
- A project's quota (``kawa projects set-quota``; the registry in ``<home>/projects.json``) holds at every start:
  a job whose request alone is over it is refused at submit (:class:`QuotaExceeded`); one that would take its
  project's active jobs over it waits until they leave room. The registry is read on every round that has queued
  jobs, inside the same transaction that claims them, so a changed quota applies at the next round. Jobs labelled
  with a project that is not registered have no quota.
- A job sees exactly its GPUs: ``CUDA_VISIBLE_DEVICES`` lists its allocated indexes (with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so they match ``nvidia-smi``); a job without GPUs gets
  ``CUDA_VISIBLE_DEVICES=""``, i.e. it sees none (it cannot use GPUs other jobs own).
- Each job runs in its own process group; cancel and timeout send SIGTERM to the group, then SIGKILL after
  ``ml.kill_grace_s``. Output (stdout and stderr) goes to ``<home>/jobs/<id>/output.log``.
- CPU and memory are reservations: a job gets ``OMP_NUM_THREADS`` (and the MKL/OpenBLAS twins) set to its CPU
  count, but memory is not enforced with rlimits (CUDA reserves large virtual address ranges).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from kawa.errors import JobError, ProjectError, QuotaExceeded, ResourceUnavailable
from kawa.ml.jobs.policy import Allocated, Limits, Placement, Use, Waiting, place
from kawa.ml.jobs.spec import JobSpec, JobState
from kawa.ml.jobs.store import Job, JobStore, pid_alive
from kawa.ml.resources import Inventory, build_inventory

if TYPE_CHECKING:
    from kawa.config import KawaConfig

log = logging.getLogger("kawa.ml.jobs")


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    deadline: float | None
    logfile: IO[bytes]
    kill_at: float | None = None  # set once SIGTERM was sent
    outcome: JobState | None = None  # what to record when it exits (cancel/timeout)
    reason: str | None = None


class Scheduler:
    """Runs jobs of ``<home>/jobs`` on this machine. Use :meth:`start`/:meth:`stop` for a background loop
    (``kawa up``) or :meth:`wait` to drive the loop inline until a job is finished."""

    name = "job-scheduler"

    def __init__(self, config: KawaConfig, inventory: Inventory | None = None, store: JobStore | None = None) -> None:
        self.config = config
        self.inventory = inventory or build_inventory(config.ml.inventory)
        self.store = store or JobStore(Path(config.home).absolute() / "jobs")
        self.tick_s = config.ml.scheduler_tick_s
        self.starvation_s = 300.0
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registry_error = ""  # the last registry error logged (each is logged once)

    # --- public API ----------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> Job:
        """Queue ``spec``; refuse it at once when this machine or its project's quota can never meet its request."""
        reason = spec.resources.never_fits(self.inventory)
        if reason is not None:
            raise ResourceUnavailable(reason)
        limits = self.limits().get(spec.project)
        excess = limits.exceeded(Use().plus(spec.resources)) if limits is not None else None
        if excess is not None:
            raise QuotaExceeded(excess.explain(spec.project))
        if spec.cwd is None:
            spec = JobSpec(**{**spec.__dict__, "cwd": os.getcwd()})
        return self.store.add(spec)

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def jobs(self, limit: int | None = None) -> list[Job]:
        return self.store.jobs(limit=limit)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once; a running one is killed (its process group) by its scheduler."""
        job = self.store.request_cancel(job_id)
        if job.state is JobState.RUNNING and job.owner_pid != os.getpid() and not pid_alive(job.owner_pid):
            # Nobody will act on the flag: kill it here.
            self._signal_group(job.pid, signal.SIGKILL)
            job = self.store.finish(job.id, JobState.CANCELLED, None, "cancelled")
        return job

    def log_path(self, job_id: str) -> Path:
        return self.store.log_path(self.store.get(job_id).id)

    def wait(self, job_id: str, timeout: float | None = None, on_tick: Callable[[Job], None] | None = None) -> Job:
        """Drive the scheduler in this thread until ``job_id`` is finished, then until every job this process
        started is finished too (none is orphaned). ``on_tick`` sees the job after every round."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.tick()
            job = self.store.get(job_id)
            if on_tick is not None:
                on_tick(job)
            with self._lock:
                idle = not self._running
            if job.state.finished and idle:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(f"job {job_id} is still {job.state} after {timeout}s")
            self._stop.wait(self.tick_s)

    def limits(self) -> dict[str, Limits]:
        """Every registered project's quota, as the placement policy enforces it."""
        from kawa.projects.registry import ProjectRegistry

        quotas = ProjectRegistry.in_home(Path(self.config.home).absolute()).quotas()
        return {name: Limits(q.cpus, q.gpus, q.memory_mb, q.concurrent_jobs) for name, q in quotas.items()}

    def running(self) -> bool:
        """Whether a job this scheduler started is still running."""
        with self._lock:
            return bool(self._running)

    # --- Service (kawa up) ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kawa-job-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop; jobs this process runs are terminated and recorded as cancelled."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for run in list(self._running.values()):
                self._terminate(run, JobState.CANCELLED, "the scheduler stopped while it ran; resubmit it")
            deadline = time.monotonic() + self.config.ml.kill_grace_s + 5
            while self._running and time.monotonic() < deadline:
                self._monitor()
                time.sleep(0.05)
        self.store.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(self.tick_s)

    # --- one round -----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Reap what ended, enforce cancels and timeouts, start what fits."""
        with self._lock:
            self._monitor()
            self.store.reap_orphans()
            for job in self.store.claim(self._decide):
                self._launch(job)

    def _decide(self, queued: list[Waiting], active: list[Allocated]) -> list[Placement]:
        try:
            limits = self.limits()
        except ProjectError as exc:  # quotas cannot be checked: start nothing (fail closed), and say why once
            if str(exc) != self._registry_error:
                log.error("no job starts until the project registry can be read: %s", exc)
                self._registry_error = str(exc)
            return []
        self._registry_error = ""
        return place(queued, active, self.inventory, now=time.time(), starvation_s=self.starvation_s, limits=limits)

    def _env(self, job: Job) -> dict[str, str]:
        spec = job.spec
        from kawa.config import inherited_environment  # here: a job's runner imports this package, keep it light

        env = inherited_environment()
        env.update(spec.env)
        home = str(Path(self.config.home).absolute())
        threads = str(max(1, math.ceil(spec.resources.cpu)))
        env.update(
            {
                "KAWA_JOB_ID": job.id,
                "KAWA_JOB_DIR": str(self.store.job_dir(job.id)),
                "KAWA_JOB_PARAMS": json.dumps(spec.params),
                "KAWA_JOB_PROJECT": spec.project,
                "KAWA_JOB_GPUS": ",".join(map(str, job.gpus)),
                "KAWA_HOME": home,
                "KAWA_ML__TRACKING": "on" if self.config.ml.tracking else "off",
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "CUDA_VISIBLE_DEVICES": ",".join(map(str, job.gpus)),
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "OPENBLAS_NUM_THREADS": threads,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.config.ml.tracking:
            from kawa.ml.refs import tracking_uri

            env["KAWA_ML__TRACKING_URI"] = tracking_uri(self.config)
        return env

    def _launch(self, job: Job) -> None:
        logfile = open(self.store.log_path(job.id), "ab")  # noqa: SIM115 - closed when the job ends
        argv = job.spec.command()
        if job.spec.is_function:  # the runner then starts without reading Kawa's configuration
            argv += [
                "--job-id",
                job.id,
                "--job-dir",
                str(self.store.job_dir(job.id)),
                "--gpus",
                ",".join(map(str, job.gpus)),
                "--params",
                json.dumps(job.spec.params),
            ]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=job.spec.cwd or None,
                env=self._env(job),
                start_new_session=True,  # own process group: cancel kills its children too
            )
        except OSError as exc:
            logfile.close()
            self.store.finish(job.id, JobState.FAILED, None, f"could not start {argv[0]!r}: {exc}")
            return
        self.store.mark_running(job.id, proc.pid)
        timeout = job.spec.timeout_s
        deadline = time.monotonic() + timeout if timeout else None
        self._running[job.id] = _Running(job, proc, deadline, logfile)
        log.info("started job %s (pid %d, gpus %s): %s", job.id, proc.pid, list(job.gpus), job.spec.entrypoint)

    def _monitor(self) -> None:
        now = time.monotonic()
        flagged = {j.id for j in self.store.jobs({JobState.RUNNING}) if j.cancel_requested}
        for job_id, run in list(self._running.items()):
            code = run.proc.poll()
            if code is not None:
                self._record_exit(run, code)
                del self._running[job_id]
                continue
            if run.outcome is None and job_id in flagged:
                self._terminate(run, JobState.CANCELLED, "cancelled")
            elif run.outcome is None and run.deadline is not None and now > run.deadline:
                self._terminate(run, JobState.TIMED_OUT, f"timed out after {run.job.spec.timeout_s:g}s")
            elif run.kill_at is not None and now > run.kill_at:
                self._signal_group(run.proc.pid, signal.SIGKILL)
                run.kill_at = None

    def _terminate(self, run: _Running, outcome: JobState, reason: str) -> None:
        run.outcome, run.reason = outcome, reason
        self._signal_group(run.proc.pid, signal.SIGTERM)
        run.kill_at = time.monotonic() + self.config.ml.kill_grace_s

    @staticmethod
    def _signal_group(pid: int | None, sig: signal.Signals) -> None:
        if not pid:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def _record_exit(self, run: _Running, code: int) -> None:
        run.logfile.close()
        # The leader exited; make sure no stragglers of the group keep GPUs busy.
        self._signal_group(run.proc.pid, signal.SIGKILL)
        if run.outcome is not None:
            self.store.finish(run.job.id, run.outcome, code, run.reason)
        elif code == 0:
            self.store.finish(run.job.id, JobState.SUCCEEDED, 0)
        else:
            error = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
            self.store.finish(run.job.id, JobState.FAILED, code, error + "; see `kawa jobs logs`")
        log.info("job %s finished with code %d", run.job.id, code)
