"""The project registry: every project's template, members, shared resources and quota, in one JSON file.

The file lives in the Kawa home (``<home>/projects.json``). Every change reads the file, applies itself and
writes a temporary file that replaces the old one (``os.replace``), all under an exclusive ``fcntl.flock`` on
``<home>/projects.json.lock``: two processes changing the registry at once never lose an update, and a reader
(who takes no lock) sees the old file or the new one, never half of one. POSIX only (``fcntl``).

``default`` always exists: it is listed and found without being stored, and is stored only once it has
members or a changed quota; until then it has no quota limits (:data:`~kawa.projects.templates.UNLIMITED`), so
single-user use is never limited. It cannot be created or deleted. Deleting a project removes its record only; its
topics and buckets stay where they are.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kawa.errors import MemberNotFound, ProjectError, ProjectExists, ProjectNotFound
from kawa.portal.permissions import Role, parse_role
from kawa.projects.core import DEFAULT_PROJECT, Project, check_name, split
from kawa.projects.templates import UNLIMITED, Quota, get_template

REGISTRY_FILE = "projects.json"
OWNER_ROLE = Role.ADMIN
"""The role a project's creator gets in it: the strongest per-project role (every action)."""

_VERSION = 1
T = TypeVar("T")
Data = dict[str, Any]


class ProjectRegistry:
    """Projects stored in ``path`` (a JSON file; created on the first change)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def in_home(cls, home: Path) -> ProjectRegistry:
        return cls(Path(home) / REGISTRY_FILE)

    # --- reads ----------------------------------------------------------------------------------------

    def get(self, name: str) -> Project:
        return _project(name, self._entry(self._read(), name))

    def list(self) -> builtins.list[Project]:
        """Every project, ``default`` first, then by name."""
        projects = self._read()["projects"]
        names = sorted(set(projects) - {DEFAULT_PROJECT})
        return [self.get(DEFAULT_PROJECT)] + [_project(n, projects[n]) for n in names]

    def names(self) -> builtins.list[str]:
        return self._names(self._read())

    @staticmethod
    def _names(data: Data) -> builtins.list[str]:
        return [DEFAULT_PROJECT, *sorted(set(data["projects"]) - {DEFAULT_PROJECT})]

    def quota(self, name: str) -> Quota:
        return Quota.from_data(self._entry(self._read(), name)["quota"])

    def quotas(self) -> dict[str, Quota]:
        """Every project's quota from one read of the file (``default`` included)."""
        data = self._read()
        return {name: Quota.from_data(self._entry(data, name)["quota"]) for name in self._names(data)}

    def owner(self, name: str) -> str | None:
        owner = self._entry(self._read(), name).get("owner")
        return str(owner) if owner else None

    # --- changes --------------------------------------------------------------------------------------

    def create(self, name: str, template: str = "empty", owner: str | None = None) -> Project:
        """A new project from ``template``: its quota from the template, ``owner`` (if any) an admin in it."""
        check_name(name)
        chosen = get_template(template)
        if name == DEFAULT_PROJECT:
            raise ProjectExists("project 'default' always exists; choose another name")

        def change(data: Data) -> Project:
            if name in data["projects"]:
                raise ProjectExists(f"project {name!r} already exists; see it with `kawa projects show {name}`")
            data["projects"][name] = {
                "template": chosen.name,
                "owner": owner,
                "members": {owner: OWNER_ROLE.value} if owner else {},
                "shared": [],
                "quota": chosen.quota.data(),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            return _project(name, data["projects"][name])

        return self._mutate(change)

    def delete(self, name: str) -> None:
        """Remove the project's record (its topics and buckets are not touched)."""
        if name == DEFAULT_PROJECT:
            raise ProjectError("project 'default' cannot be deleted; it holds everything that names no project")

        def change(data: Data) -> None:
            self._entry(data, name)
            del data["projects"][name]

        self._mutate(change)

    def add_member(self, project: str, user: str, role: Role | str) -> Project:
        """Make ``user`` a member of ``project`` with ``role`` (a member already there gets the new role)."""
        chosen = parse_role(str(role))
        if not user:
            raise ProjectError("a member needs a user name")

        def change(data: Data) -> Project:
            entry = self._stored_entry(data, project)
            entry["members"][user] = chosen.value
            return _project(project, entry)

        return self._mutate(change)

    def remove_member(self, project: str, user: str) -> Project:
        def change(data: Data) -> Project:
            entry = self._stored_entry(data, project)
            if user not in entry["members"]:
                members = ", ".join(sorted(entry["members"])) or "none"
                raise MemberNotFound(f"{user!r} is not a member of project {project!r}; its members: {members}")
            del entry["members"][user]
            return _project(project, entry)

        return self._mutate(change)

    def share(self, project: str, resource: str) -> Project:
        """Let every user read ``resource`` (``name`` or ``project/name``) of ``project``."""
        owner, name = split(resource) if "/" in resource else (project, resource)
        if owner != project:
            raise ProjectError(f"{resource!r} belongs to project {owner!r}, not {project!r}; share it from there")

        def change(data: Data) -> Project:
            entry = self._stored_entry(data, project)
            full = f"{project}/{name}"
            if full not in entry["shared"]:
                entry["shared"] = sorted([*entry["shared"], full])
            return _project(project, entry)

        return self._mutate(change)

    def set_quota(self, project: str, **fields: float | str | None) -> Quota:
        """Change some quota fields of ``project`` (``None``: no limit); the others keep their values."""

        def change(data: Data) -> Quota:
            entry = self._stored_entry(data, project)
            quota = Quota.from_data({**entry["quota"], **fields})
            entry["quota"] = quota.data()
            return quota

        return self._mutate(change)

    # --- the file -------------------------------------------------------------------------------------

    def _read(self) -> Data:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"version": _VERSION, "projects": {}}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProjectError(f"{self.path} is not valid JSON ({exc}); restore it or move it away") from exc
        if not isinstance(data, dict) or not isinstance(data.get("projects"), dict):
            raise ProjectError(f"{self.path} does not hold a project registry; restore it or move it away")
        return data

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _mutate(self, change: Callable[[Data], T]) -> T:
        with self._locked():
            data = self._read()
            result = change(data)
            self._write(data)
            return result

    def _write(self, data: Data) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _entry(self, data: Data, name: str) -> Data:
        entry = data["projects"].get(name)
        if entry is not None:
            return dict(entry)
        if name == DEFAULT_PROJECT:
            return _default_entry()
        check_name(name)
        known = ", ".join(self._names(data))
        raise ProjectNotFound(f"no project {name!r}; known projects: {known} (create it with `kawa projects create`)")

    def _stored_entry(self, data: Data, name: str) -> Data:
        """The project's record in ``data`` itself, to change in place (``default``'s is stored on first use)."""
        if name not in data["projects"]:
            data["projects"][name] = self._entry(data, name)
        entry: Data = data["projects"][name]
        return entry


def _default_entry() -> Data:
    return {"template": "empty", "owner": None, "members": {}, "shared": [], "quota": UNLIMITED.data()}


def _project(name: str, entry: Data) -> Project:
    members = {user: Role(role) for user, role in entry.get("members", {}).items()}
    return Project(name, template=entry.get("template", "empty"), members=members,
                   shared=frozenset(entry.get("shared", ())))  # fmt: skip
