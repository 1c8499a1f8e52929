"""Which queued jobs start now: FIFO within a project, fair share (dominant resource share) across projects.

A pure function over snapshots, so it is tested without processes. Rules:

1. Projects are served in order of their *dominant share* of what is allocated now (running jobs plus those
   picked in this round): the larger of its CPU, memory and GPU fractions of the machine. Ties go to the
   project whose oldest queued job is older.
2. Within a project, jobs go in submission order (FIFO). A project's head job that does not fit blocks the
   rest of that project (no reordering inside a project).
3. A head job that does not fit does not block *other* projects (they may backfill) — unless it has waited
   longer than ``starvation_s``: then nothing else starts until it does, so big requests are not starved.
4. A project with :class:`Limits` (its quota) never holds more than them: a head job that would take the
   project's running and just-picked jobs over a limit waits for the project's own jobs to end. It blocks only
   its own project and never reserves the machine (that would let one project's quota stall everyone).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from kawa.ml.jobs.spec import Resources
from kawa.ml.resources import Inventory


@dataclass(frozen=True)
class Waiting:
    id: str
    seq: int
    project: str
    resources: Resources
    submitted_at: float


@dataclass(frozen=True)
class Allocated:
    project: str
    resources: Resources
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Placement:
    id: str
    gpus: tuple[int, ...]


MiB = 1024**2


@dataclass(frozen=True)
class Use:
    """What a project holds at once: its active jobs' requests summed, and how many they are."""

    cpus: float = 0.0
    memory_bytes: int = 0
    gpus: int = 0
    jobs: int = 0

    def plus(self, r: Resources) -> Use:
        return Use(self.cpus + r.cpu, self.memory_bytes + r.memory_bytes, self.gpus + r.gpus, self.jobs + 1)


def held_by_project(active: Iterable[tuple[str, Resources]]) -> dict[str, Use]:
    """What each project's active jobs (``(project, request)`` pairs) hold together."""
    held: dict[str, Use] = {}
    for project, request in active:
        held[project] = held.get(project, Use()).plus(request)
    return held


class Excess(NamedTuple):
    """A limit that a use goes over, in the quota's own field name and unit."""

    quota: str  # cpus, gpus, memory_mb or concurrent_jobs (the fields of kawa.projects.templates.Quota)
    limit: float
    use: float

    def explain(self, project: str) -> str:
        """Kawa's words for a job that alone goes over: the quota, its limit, what it asks, how to raise it."""
        flag = "--" + self.quota.replace("_", "-")
        enough = self.use if self.quota == "cpus" else math.ceil(self.use - 1e-9)  # the other fields are whole
        return (
            f"project {project!r} has a quota of {self.limit:g} {self.quota} at once and this job alone asks for "
            f"{self.use:g}; ask for less, or have a project admin raise it: "
            f"`kawa projects set-quota {project} {flag} {enough:g}`"
        )


@dataclass(frozen=True)
class Limits:
    """A project's quota as the scheduler enforces it; ``None`` is no limit."""

    cpus: float | None = None
    gpus: int | None = None
    memory_mb: int | None = None
    concurrent_jobs: int | None = None

    def exceeded(self, use: Use) -> Excess | None:
        """The first limit ``use`` goes over (None when it is within all of them)."""
        checks = (
            ("concurrent_jobs", self.concurrent_jobs, float(use.jobs)),
            ("gpus", self.gpus, float(use.gpus)),
            ("cpus", self.cpus, use.cpus),
            ("memory_mb", self.memory_mb, use.memory_bytes / MiB),
        )
        for quota, limit, value in checks:
            if limit is not None and value > limit + 1e-9:
                return Excess(quota, float(limit), value)
        return None


def _share(used: Resources, inventory: Inventory) -> float:
    parts = [used.cpu / inventory.cpus if inventory.cpus else 0.0]
    if inventory.memory_bytes:
        parts.append(used.memory_bytes / inventory.memory_bytes)
    if inventory.gpu_count:
        parts.append(used.gpus / inventory.gpu_count)
    return max(parts)


def _add(a: Resources, b: Resources) -> Resources:
    return Resources(a.cpu + b.cpu, a.memory_bytes + b.memory_bytes, a.gpus + b.gpus)


def place(
    queued: list[Waiting],
    running: list[Allocated],
    inventory: Inventory,
    *,
    now: float,
    starvation_s: float = 300.0,
    limits: Mapping[str, Limits] | None = None,
) -> list[Placement]:
    """The queued jobs to start now and the GPU indexes each gets (disjoint from every running job's), keeping
    each project in ``limits`` within them (projects not in it have no limits)."""
    free_cpu = inventory.cpus - sum(a.resources.cpu for a in running)
    free_mem = inventory.memory_bytes - sum(a.resources.memory_bytes for a in running)
    taken = {g for a in running for g in a.gpus}
    free_gpus = [g.index for g in inventory.gpus if g.index not in taken]

    usage: dict[str, Resources] = {}
    for a in running:
        usage[a.project] = _add(usage.get(a.project, Resources(1e-9, 0, 0)), a.resources)
    held = held_by_project((a.project, a.resources) for a in running)
    limits = limits or {}
    queues: OrderedDict[str, list[Waiting]] = OrderedDict()
    for job in sorted(queued, key=lambda j: j.seq):
        queues.setdefault(job.project, []).append(job)

    placements: list[Placement] = []
    blocked: set[str] = set()
    while True:
        candidates = [p for p in queues if queues[p] and p not in blocked]
        if not candidates:
            return placements

        def order(p: str) -> tuple[int, float, int]:
            head = queues[p][0]
            if now - head.submitted_at > starvation_s:
                return (0, 0.0, head.seq)  # starving heads first, oldest first
            return (1, _share(usage.get(p, Resources(1e-9, 0, 0)), inventory), head.seq)

        project = min(candidates, key=order)
        job = queues[project][0]
        req = job.resources
        limit = limits.get(project)
        if limit is not None and limit.exceeded(held.get(project, Use()).plus(req)) is not None:
            blocked.add(project)  # over its quota: waits for its own jobs, never reserves the machine
            continue
        fits = (
            req.cpu <= free_cpu + 1e-9
            and (not inventory.memory_bytes or req.memory_bytes <= free_mem)
            and req.gpus <= len(free_gpus)
        )
        if not fits:
            if now - job.submitted_at > starvation_s:
                return placements  # reserve the machine for the starving job
            blocked.add(project)
            continue
        gpus = tuple(free_gpus[: req.gpus])
        del free_gpus[: req.gpus]
        free_cpu -= req.cpu
        free_mem -= req.memory_bytes
        usage[project] = _add(usage.get(project, Resources(1e-9, 0, 0)), req)
        held[project] = held.get(project, Use()).plus(req)
        queues[project].pop(0)
        placements.append(Placement(job.id, gpus))
