"""Which queued jobs start now: FIFO within a project, fair share (dominant resource share) across projects.

A pure function over snapshots, so it is tested without processes. Rules:

1. Projects are served in order of their *dominant share* of what is allocated now (running jobs plus those
   picked in this round): the larger of its CPU, memory and GPU fractions of the machine. Ties go to the
   project whose oldest queued job is older.
2. Within a project, jobs go in submission order (FIFO). A project's head job that does not fit blocks the
   rest of that project (no reordering inside a project).
3. A head job that does not fit does not block *other* projects (they may backfill) — unless it has waited
   longer than ``starvation_s``: then nothing else starts until it does, so big requests are not starved.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

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
) -> list[Placement]:
    """The queued jobs to start now and the GPU indexes each gets (disjoint from every running job's)."""
    free_cpu = inventory.cpus - sum(a.resources.cpu for a in running)
    free_mem = inventory.memory_bytes - sum(a.resources.memory_bytes for a in running)
    taken = {g for a in running for g in a.gpus}
    free_gpus = [g.index for g in inventory.gpus if g.index not in taken]

    usage: dict[str, Resources] = {}
    for a in running:
        usage[a.project] = _add(usage.get(a.project, Resources(1e-9, 0, 0)), a.resources)
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
        queues[project].pop(0)
        placements.append(Placement(job.id, gpus))
