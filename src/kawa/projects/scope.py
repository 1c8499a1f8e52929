"""Who may do what to which bucket or topic outside the portal: the same (user, project, action) check.

Pure: a :class:`Scope` is a snapshot of one user and the registry's projects; :meth:`Scope.refusal` says, in Kawa's
words, why an action is refused (None: allowed). :mod:`kawa.projects.scoped` applies it to every call of the log
and store APIs. The rules are the portal's (``docs/projects.md``):

- a bucket ``P--x`` or topic ``P.x`` belongs to registered project ``P``, anything else to ``default`` (where a
  user's global role is their role);
- listing and describing need ``portal.view`` there, or the resource shared (``kawa projects share``);
- an object's content, metadata or listing needs ``phi.read`` there as well, unless the bucket is PHI-free
  (declared in ``portal.phi_free_buckets`` or by the project's template); a topic's records always do;
- creating, writing and deleting buckets and objects need ``buckets.write``; creating, deleting and producing to
  topics ``topics.write``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from kawa.portal.permissions import Action
from kawa.projects.core import DEFAULT_PROJECT, Project, User, bucket_project, can

__all__ = ["Kind", "Op", "Scope", "topic_project"]


class Kind(StrEnum):
    BUCKET = "bucket"
    TOPIC = "topic"


class Op(StrEnum):
    LIST = "list"  # see that it exists: listings, describe, exists
    READ = "read"  # its content: objects and their listing, a topic's records
    WRITE = "write"  # create, put, copy into, delete, produce, notification rules


def topic_project(topic: str, registered: Mapping[str, object] | set[str] | frozenset[str]) -> str:
    """The project a topic belongs to: its ``P.`` prefix when ``P`` is a registered project, else ``default``."""
    prefix, sep, rest = topic.partition(".")
    return prefix if sep and rest and prefix != DEFAULT_PROJECT and prefix in registered else DEFAULT_PROJECT


def _short(kind: Kind, project: str, name: str) -> str:
    if project == DEFAULT_PROJECT:
        return name
    return name[len(project) + (2 if kind is Kind.BUCKET else 1) :]


@dataclass(frozen=True)
class Scope:
    """One user and the projects as the registry holds them (``default`` included)."""

    user: User
    projects: Mapping[str, Project]
    phi_free: frozenset[str] = field(default_factory=frozenset)  # bucket names declared free of PHI

    def owner(self, kind: Kind, name: str) -> Project:
        project = bucket_project(name, self.projects) if kind is Kind.BUCKET else topic_project(name, self.projects)
        return self.projects.get(project) or Project(DEFAULT_PROJECT)

    def actions(self, kind: Kind, name: str, op: Op) -> tuple[Action, ...]:
        """The actions ``op`` on ``name`` needs, in its owner's project."""
        if op is Op.WRITE:
            return (Action.BUCKETS_WRITE if kind is Kind.BUCKET else Action.TOPICS_WRITE,)
        if op is Op.LIST or (kind is Kind.BUCKET and name in self.phi_free):
            return (Action.VIEW,)
        return (Action.VIEW, Action.PHI_READ)

    def refusal(self, kind: Kind, name: str, op: Op) -> str | None:
        """Why ``op`` on bucket or topic ``name`` is refused to this user, in Kawa's words; None when allowed."""
        owner = self.owner(kind, name)
        shared = f"{owner.name}/{_short(kind, owner.name, name)}" in owner.shared
        for action in self.actions(kind, name, op):
            if action is Action.VIEW and shared:
                continue
            if not can(self.user, owner, action):
                return self._words(kind, name, owner.name, action)
        return None

    def allows(self, kind: Kind, name: str, op: Op) -> bool:
        return self.refusal(kind, name, op) is None

    def _words(self, kind: Kind, name: str, project: str, action: Action) -> str:
        who = self.user.name
        if project == DEFAULT_PROJECT:
            role = self.user.global_role.value if self.user.global_role is not None else "none"
            return (
                f"{who} may not {action.value} on {kind.value} {name!r} (project default, global role {role}); "
                f"ask an admin for a role that may (`kawa users set-role {who} ROLE`)"
            )
        return (
            f"{kind.value} {name!r} belongs to project {project!r}, where {who} has no role that may "
            f"{action.value}; ask one of its admins (`kawa projects add-member {project} {who} ROLE`)"
        )
