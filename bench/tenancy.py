"""Benchmark of multi-tenancy: permission checks, a user's listing across projects, and the audit record's cost.

    .venv/bin/python bench/tenancy.py [--size small|full] [--projects P] [--users-per-project U]
                                      [--resources R] [--checks N] [--listings L] [--audit-records A]

In memory (``kawa.projects.core``): P projects (full: 130) of U members each (full: 10, drawn from a pool of
P*U/4 users, so most users are in several projects; random roles), R resources per project (full: 20), two of
them shared.

1. ``perm_check``: ``can(user, project, action)`` for N random triples (at least 100,000), each timed alone
   with ``perf_counter_ns`` (the timer's own cost, measured on an empty call, is reported, not subtracted).
2. ``listing``: for one random user, every resource of every project that user may see (``can_read_shared``:
   a member's view, or a shared resource), filtering all P*R canonical names; L listings.
3. ``portal_listing``: the same registry (P projects, their members) in a Kawa home, the portal served over real
   HTTP (uvicorn on loopback), and ``GET /api/projects`` (the projects a user may view, each with quota and use)
   for random members with API tokens; L requests (after 5 untimed warm-up requests), each timed end to end by
   the client.
4. ``audit``: A requests (a permission check) with one ``AuditTrail.append`` each to an embedded log in a
   temporary directory (``log.fsync: never``, the default), against the same requests without it; the mean
   extra time per request.

Goals (issue #18): permission check p99 ≤ 50 µs, listings p99 ≤ 100 ms (in memory and through the portal),
audit ≤ 1 ms a request. The last line is JSON: {"perm_check_p50_us": ..., "perm_check_p99_us": ...,
"listing_p99_ms": ..., "portal_listing_p99_ms": ..., "audit_ms": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kawa.portal.permissions import Action, Role
from kawa.projects.core import Project, User, can, can_read_shared, canonical

SIZES = {
    "small": {"projects": 20, "users_per_project": 5, "resources": 20, "checks": 100_000, "listings": 200,
              "audit_records": 300},
    "full": {"projects": 130, "users_per_project": 10, "resources": 20, "checks": 300_000, "listings": 1000,
             "audit_records": 2000},
}  # fmt: skip
GOALS = {"perm_check_p99_us": 50.0, "listing_p99_ms": 100.0, "portal_listing_p99_ms": 100.0, "audit_ms": 1.0}
PORTAL_USERS = 20  # members given portal accounts and tokens (each password hash costs ~0.1 s)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build(projects: int, users_per_project: int, resources: int, rng: random.Random) -> tuple[
    list[Project], list[User], dict[str, list[str]]
]:  # fmt: skip
    pool = [User(f"user-{i}") for i in range(max(users_per_project, projects * users_per_project // 4))]
    roles = list(Role)
    built: list[Project] = []
    names: dict[str, list[str]] = {}
    for p in range(projects):
        name = f"project-{p}"
        members = {u.name: rng.choice(roles) for u in rng.sample(pool, users_per_project)}
        names[name] = [canonical(name, f"resource-{r}") for r in range(resources)]
        built.append(Project(name, members=members, shared=frozenset(names[name][:2])))
    return built, pool, names


def perm_checks(projects: list[Project], users: list[User], n: int, rng: random.Random, progress: Progress) -> list[
    float
]:  # fmt: skip
    actions = list(Action)
    triples = [(rng.choice(users), rng.choice(projects), rng.choice(actions)) for _ in range(n)]
    clock = time.perf_counter_ns
    out: list[float] = []
    task = progress.add_task("permission checks", total=n)
    for i, (user, project, action) in enumerate(triples):
        start = clock()
        can(user, project, action)
        out.append(clock() - start)
        if i % 10_000 == 0:
            progress.update(task, completed=i)
    progress.update(task, completed=n)
    return out


def timer_cost_ns(n: int = 100_000) -> float:
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        start = clock()
        out.append(clock() - start)
    return quantile([float(v) for v in out], 0.5)


def listing(user: User, projects: list[Project], names: dict[str, list[str]]) -> list[str]:
    """Every resource ``user`` may see, across all projects."""
    return [c for p in projects for c in names[p.name] if can_read_shared(user, p, c)]


def listings(projects: list[Project], users: list[User], names: dict[str, list[str]], n: int, rng: random.Random,
             progress: Progress) -> tuple[list[float], float]:  # fmt: skip
    out: list[float] = []
    seen = 0
    task = progress.add_task("listings", total=n)
    for _ in range(n):
        user = rng.choice(users)
        start = time.perf_counter_ns()
        seen += len(listing(user, projects, names))
        out.append((time.perf_counter_ns() - start) / 1e6)
        progress.advance(task)
    return out, seen / n


def audit_cost(projects: list[Project], users: list[User], n: int, rng: random.Random, progress: Progress) -> tuple[
    float, float
]:  # fmt: skip
    """Mean extra ms per request for one audit record, and the p99 of an append alone."""
    from kawa.audit.record import AuditRecord
    from kawa.audit.trail import AuditTrail
    from kawa.config import KawaConfig
    from kawa.log import open_log

    requests = [(rng.choice(users), rng.choice(projects), rng.choice(list(Action))) for _ in range(n)]
    with tempfile.TemporaryDirectory(prefix="kawa-bench-tenancy-") as tmp:
        log = open_log(f"embedded:{Path(tmp) / 'log'}", KawaConfig(home=Path(tmp)))
        trail = AuditTrail(log)
        trail.append(AuditRecord("warm-up", "bench.warm", "x", "ok", "warm-0"))  # topic creation not counted
        start = time.perf_counter()
        for user, project, action in requests:
            can(user, project, action)
        bare_s = time.perf_counter() - start
        appends: list[float] = []
        task = progress.add_task("audited requests", total=n)
        start = time.perf_counter()
        for i, (user, project, action) in enumerate(requests):
            allowed = can(user, project, action)
            t0 = time.perf_counter_ns()
            trail.append(AuditRecord(user.name, action.value, f"{project.name}/x", "ok" if allowed else "denied",
                                     f"r-{i}", project=project.name, status=200 if allowed else 403))  # fmt: skip
            appends.append((time.perf_counter_ns() - t0) / 1e6)
            progress.advance(task)
        audited_s = time.perf_counter() - start
        trail.close()
        log.close()
    return (audited_s - bare_s) * 1000 / n, quantile(appends, 0.99)


def portal_listings(projects: list[Project], n: int, rng: random.Random, progress: Progress) -> list[float]:
    """Milliseconds per ``GET /api/projects`` through the served portal, for random members."""
    import urllib.request

    from kawa.config import load_config
    from kawa.platform import Platform
    from kawa.portal import serve
    from kawa.projects.registry import ProjectRegistry

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".kawa"
        registry = ProjectRegistry.in_home(home)
        task = progress.add_task("registry", total=len(projects))
        for project in projects:
            registry.create(project.name)
            for user, role in project.members.items():
                registry.add_member(project.name, user, role)
            progress.advance(task)
        platform_ = Platform(load_config(home=str(home), portal={"port": 0}))
        server = serve(platform_)
        try:
            assert server.portal is not None
            members = sorted({u for p in projects for u in p.members})
            tokens = []
            for name in rng.sample(members, min(PORTAL_USERS, len(members))):
                server.portal.users.add_user(name, Role.VIEWER, "correct horse battery")
                tokens.append(server.portal.users.create_token(name, "bench")[1])
            url = server.url.rstrip("/") + "/api/projects"
            for token in tokens[:5]:  # warm-up, not timed: the first request opens the job table and the log
                urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}),
                                       timeout=30).read()  # fmt: skip
            times: list[float] = []
            task = progress.add_task("portal listings", total=n)
            for _ in range(n):
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {rng.choice(tokens)}"})
                t0 = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:
                    listed = json.loads(response.read())
                times.append((time.perf_counter() - t0) * 1000)
                assert isinstance(listed, list) and listed and listed[0]["name"] == "default"
                progress.advance(task)
        finally:
            server.stop()
            platform_.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    for flag in ("projects", "users-per-project", "resources", "checks", "listings", "audit-records"):
        parser.add_argument(f"--{flag}", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    size = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in SIZES[args.size].items()}
    size["checks"] = max(100_000, size["checks"])
    console = Console(stderr=True)
    load = os.getloadavg()[0]
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {sys.version.split()[0]}, load average {load:.1f}; size {size}")  # fmt: skip
    rng = random.Random(args.seed)
    projects, users, names = build(size["projects"], size["users_per_project"], size["resources"], rng)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        checks = perm_checks(projects, users, size["checks"], rng, progress)
        lists, visible = listings(projects, users, names, size["listings"], rng, progress)
        portal_lists = portal_listings(projects, size["listings"], rng, progress)
        audit_ms, append_p99_ms = audit_cost(projects, users, size["audit_records"], rng, progress)
    result = {
        "perm_check_p50_us": round(quantile(checks, 0.5) / 1000, 3),
        "perm_check_p99_us": round(quantile(checks, 0.99) / 1000, 3),
        "listing_p50_ms": round(quantile(lists, 0.5), 3),
        "listing_p99_ms": round(quantile(lists, 0.99), 3),
        "portal_listing_p50_ms": round(quantile(portal_lists, 0.5), 3),
        "portal_listing_p99_ms": round(quantile(portal_lists, 0.99), 3),
        "audit_ms": round(audit_ms, 3),
        "audit_append_p99_ms": round(append_p99_ms, 3),
        "timer_cost_ns": timer_cost_ns(),
        "visible_per_listing": round(visible, 1),
        "projects": size["projects"],
        "users_per_project": size["users_per_project"],
        "resources": size["resources"],
        "checks": size["checks"],
        "load_avg": round(load, 1),
    }
    for key, goal in GOALS.items():
        console.print(f"{key} {result[key]} (goal ≤ {goal}): {'met' if result[key] <= goal else 'MISSED'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
