"""Projects as the portal sees them: the ones a user may view, each quota beside what the project's jobs hold now."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from kawa.errors import NotConfigured, ProjectNotFound
from kawa.ml.jobs.policy import Limits
from kawa.portal.permissions import Action, Role
from kawa.projects.core import DEFAULT_PROJECT, Project, User, can, k8s_namespace, role_in
from kawa.projects.registry import ProjectRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    from kawa.ml.jobs.policy import Use
    from kawa.portal.sources.functions import FunctionsSource
    from kawa.portal.sources.jobs import JobsSource
    from kawa.portal.users import User as PortalUser
    from kawa.projects.templates import Quota

ENFORCED = (*(f.name for f in fields(Limits)), "storage_bytes", "function_replicas")
"""The quota fields Kawa enforces: the job scheduler's four, storage bytes in every store Kawa opens, and function
replicas in each function host (the use shown is this process's host's)."""


@dataclass(frozen=True)
class QuotaLine:
    field: str
    limit: float | None  # None: no limit
    use: float | None  # None: not measured (not enforced yet, or no job table here)
    enforced: bool


@dataclass(frozen=True)
class ProjectView:
    name: str
    template: str
    namespace: str
    members: int
    role: str | None  # the viewer's role in it (None: a platform admin who is no member)
    quota: tuple[QuotaLine, ...]


def _prefix(kind: str, name: str) -> str | None:
    """The project prefix of a bucket (``P--name``), topic or model (``P.name``) name; None when it has none."""
    prefix, found, rest = name.partition("--" if kind == "bucket" else ".")
    return prefix if found and rest else None


def as_member(user: PortalUser) -> User:
    """The portal user for the project permission check: a global admin is a platform admin; the global role is
    the user's role in ``default``."""
    return User(user.name, global_role=user.role, platform_admin=user.role is Role.ADMIN)


class ProjectsSource:
    def __init__(self, registry: ProjectRegistry, jobs: JobsSource, storage: Callable[[str], int | None] | None = None,
                 functions: FunctionsSource | None = None) -> None:  # fmt: skip
        self.registry = registry
        self.jobs = jobs
        self.storage = storage  # a project's stored bytes (None: not measured)
        self.functions = functions  # the function host of this process: replicas held per project

    def projects(self, user: PortalUser) -> list[Project]:
        """Every project, each with ``user``'s role from their IdP groups (``portal.oidc.group_roles``) over the
        registry's (a project that is not registered is not created by a group)."""
        granted = dict(user.project_roles)
        out = []
        for p in self.registry.list():
            role = granted.get(p.name)
            out.append(p if role is None else Project(p.name, p.template, {**p.members, user.name: role}, p.shared))
        return out

    def visible(self, user: PortalUser) -> list[ProjectView]:
        """The projects ``user`` may view (``default`` first), with quota and use."""
        who = as_member(user)
        projects = [p for p in self.projects(user) if can(who, p, Action.VIEW)]
        held, quotas = self._held(), self.registry.quotas()
        replicas = self._replicas(set(quotas))
        return [self._view(p, who, held, quotas[p.name], replicas) for p in projects if p.name in quotas]

    def one(self, user: PortalUser, name: str) -> ProjectView:
        """A project ``user`` may view; one they may not is reported as not found (its existence is not told)."""
        for view in self.visible(user):
            if view.name == name:
                return view
        raise ProjectNotFound(f"no project {name!r} that you may view; `kawa projects list` shows them to an admin")

    def landing(self, user: PortalUser) -> str | None:
        """The project a user who signs in without a target lands on: the first one they are a member of, other
        than ``default`` (None when there is none: they land on the overview)."""
        mine = [p.name for p in self.projects(user) if p.name != DEFAULT_PROJECT and user.name in p.members]
        return mine[0] if mine else None

    def owner(self, kind: str, name: str) -> str | None:
        """The registered project (not ``default``) that owns bucket, topic or model ``name`` by its prefix
        (``project--bucket``, ``project.topic``, ``project.model``); None for a name of ``default`` (no registered
        prefix)."""
        prefix = _prefix(kind, name)
        return self.registered(prefix) if prefix is not None else None

    def registered(self, project: str) -> str | None:
        """``project`` when it is a registered project other than ``default`` (a job's label may be neither)."""
        return project if project != DEFAULT_PROJECT and project in self.registry.names() else None

    def may_view_label(self, user: PortalUser) -> Callable[[str], bool]:
        """A test of a project label (a job's): true for a registered project ``user`` may view, and for any
        label that is no registered project (those are ``default``'s, checked with the global role)."""
        who = as_member(user)
        projects = self.projects(user)
        registered = {p.name for p in projects} - {DEFAULT_PROJECT}
        seen = {p.name for p in projects if can(who, p, Action.VIEW)}
        return lambda label: label not in registered or label in seen

    def allows_somewhere(self, user: PortalUser, action: Action) -> bool:
        """Whether ``user`` may take ``action`` in some registered project (not ``default``), by their role there."""
        who = as_member(user)
        return any(p.name != DEFAULT_PROJECT and user.name in p.members and can(who, p, action)
                   for p in self.projects(user))  # fmt: skip

    def allows(self, user: PortalUser, project: str, action: Action) -> bool:
        """Whether ``user``'s role in ``project`` (the registry's, or their IdP groups') may take ``action``."""
        who = as_member(user)
        return any(p.name == project and can(who, p, action) for p in self.projects(user))

    def viewable(self, user: PortalUser, kind: str, names: list[str]) -> list[str]:
        """``names`` without the buckets, topics or models of projects ``user`` may not view (one registry read)."""
        may_view = self.may_view_label(user)
        return [n for n in names if (prefix := _prefix(kind, n)) is None or may_view(prefix)]

    def _held(self) -> dict[str, Use] | None:
        ok, _reason = self.jobs.available()
        if not ok:
            return None
        from kawa.ml.jobs.policy import held_by_project
        from kawa.ml.jobs.spec import ACTIVE

        try:
            active = self.jobs.scheduler.store.jobs(set(ACTIVE))
        except NotConfigured:
            return None
        return held_by_project((j.project, j.spec.resources) for j in active)

    def _replicas(self, registered: set[str]) -> dict[str, int] | None:
        """The replicas each project's functions hold in this process's function host (None: no host here)."""
        if self.functions is None or not self.functions.available()[0]:
            return None
        from kawa.functions.host import function_project

        out: dict[str, int] = {}
        try:
            for view in self.functions.functions():
                project = function_project(view.spec, registered)
                out[project] = out.get(project, 0) + view.stats.replicas
        except NotConfigured:
            return None
        return out

    def _view(self, project: Project, who: User, held: dict[str, Use] | None, quota: Quota,
              replicas: dict[str, int] | None = None) -> ProjectView:  # fmt: skip
        from kawa.ml.jobs.policy import MiB, Use

        use = None if held is None else held.get(project.name, Use())
        measured: dict[str, float] = {}
        if use is not None:
            measured = {"cpus": use.cpus, "gpus": float(use.gpus), "memory_mb": use.memory_bytes / MiB,
                        "concurrent_jobs": float(use.jobs)}  # fmt: skip
        stored = self.storage(project.name) if self.storage is not None else None
        if stored is not None:
            measured["storage_bytes"] = float(stored)
        if replicas is not None:
            measured["function_replicas"] = float(replicas.get(project.name, 0))
        lines = tuple(QuotaLine(f, None if v is None else float(v), measured.get(f), f in ENFORCED)
                      for f, v in quota.data().items())  # fmt: skip
        role = role_in(who, project)
        return ProjectView(project.name, project.template, k8s_namespace(project.name), len(project.members),
                           role.value if role is not None else None, lines)  # fmt: skip
