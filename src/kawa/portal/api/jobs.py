"""Training jobs: the queue, running jobs with their allocated CPUs/memory/GPUs, logs; submit and cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from kawa.portal.api.common import ERRORS, Section, not_configured
from kawa.portal.auth import Principal, get_portal, may_in, require
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERRORS)

JOB_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class JobOut(BaseModel):
    id: str
    name: str | None
    entrypoint: str
    project: str
    state: str
    cpu: float
    memory_bytes: int | None
    gpu: int
    gpus_allocated: list[int]
    params: dict[str, Any]
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    error: str | None


class JobIn(BaseModel):
    entrypoint: str = Field(min_length=1, max_length=1000, description="module:function or a command")
    cpu: float = Field(1.0, gt=0, le=1024)
    memory: str | None = Field(
        None, max_length=20, pattern=r"^[0-9]+(\.[0-9]+)?[KMGTkmgt]?i?[Bb]?$", description="e.g. 4G, 512M"
    )
    gpu: int = Field(0, ge=0, le=64)
    params: dict[str, Any] = {}
    project: str = Field("default", min_length=1, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")
    timeout_s: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    name: str | None = Field(None, max_length=100)


class GpuOut(BaseModel):
    index: int
    name: str
    memory_mib: int
    job: str | None = Field(None, description="the running job holding it")


class ResourcesOut(BaseModel):
    cpus: float
    memory_bytes: int
    gpus: list[GpuOut]
    source: str
    cpus_allocated: float
    memory_allocated_bytes: int
    scheduler_here: bool = Field(description="the scheduler runs in the portal's process")


def job_out(job: Any) -> JobOut:
    r = job.spec.resources
    return JobOut(
        id=job.id,
        name=job.spec.name,
        entrypoint=job.spec.entrypoint,
        project=job.spec.project,
        state=str(job.state),
        cpu=r.cpu,
        memory_bytes=r.memory_bytes or None,
        gpu=r.gpus,
        gpus_allocated=list(job.gpus),
        params=dict(job.spec.params),
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        exit_code=job.exit_code,
        error=job.error,
    )


@router.get("", response_model=Section[JobOut])
def list_jobs(
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> dict[str, Any]:
    """The newest jobs you may view (another project's are left out)."""
    ok, reason = portal.jobs.available()
    if not ok:
        return not_configured(reason)
    return {"items": [job_out(j) for j in visible_jobs(portal, principal, limit)]}


def visible_jobs(portal: Portal, principal: Principal, limit: int) -> list[Any]:
    keep = portal.projects.may_view_label(principal.user)
    return [j for j in portal.jobs.jobs(limit) if keep(j.spec.project)]


def may_on_job(principal: Principal, portal: Portal, job: Any, action: Action) -> None:
    """``action`` on ``job`` with the user's role in the job's project (see :func:`kawa.portal.auth.may_in`)."""
    may_in(principal, portal, portal.projects.registered(job.spec.project), action, f"job {job.id}")


@router.get("/resources", response_model=ResourcesOut)
def resources(_: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)) -> ResourcesOut:
    """The machine's inventory and what running jobs hold of it."""
    inv = portal.jobs.inventory()
    running = [j for j in portal.jobs.jobs(1000) if str(j.state) == "running"]
    holder = {g: j.id for j in running for g in j.gpus}
    return ResourcesOut(
        cpus=inv.cpus,
        memory_bytes=inv.memory_bytes,
        source=inv.source,
        gpus=[GpuOut(index=g.index, name=g.name, memory_mib=g.memory_mib, job=holder.get(g.index)) for g in inv.gpus],
        cpus_allocated=sum(j.spec.resources.cpu for j in running),
        memory_allocated_bytes=sum(j.spec.resources.memory_bytes for j in running),
        scheduler_here=portal.jobs.running_here(),
    )


@router.post("", response_model=JobOut, status_code=201)
def submit_job(
    body: JobIn, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> JobOut:
    """Queue a job (``jobs.submit`` in its project); refused over the machine or the project's quota."""
    may_in(principal, portal, portal.projects.registered(body.project), Action.JOBS_SUBMIT, f"project {body.project!r}")
    spec = portal.jobs.build_spec(
        entrypoint=body.entrypoint,
        cpu=body.cpu,
        mem=body.memory,
        gpu=body.gpu,
        params=body.params,
        project=body.project,
        timeout_s=body.timeout_s,
        name=body.name,
    )
    return job_out(portal.jobs.submit(spec))


@router.get("/{job_id}", response_model=JobOut)
def get_job(
    job_id: JOB_ID, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> JobOut:
    job = portal.jobs.job(job_id)
    may_on_job(principal, portal, job, Action.VIEW)
    return job_out(job)


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
def job_logs(
    job_id: JOB_ID,
    max_bytes: Annotated[int, Query(ge=1, le=4 * 1024 * 1024)] = 64 * 1024,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> str:
    """The end of the job's output (stdout and stderr)."""
    may_on_job(principal, portal, portal.jobs.job(job_id), Action.VIEW)
    return portal.jobs.log_tail(job_id, max_bytes)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(
    job_id: JOB_ID, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> JobOut:
    may_on_job(principal, portal, portal.jobs.job(job_id), Action.JOBS_CANCEL)
    return job_out(portal.jobs.cancel(job_id))
