"""Pure core of projects: who may do what where, and how ``project/name`` maps onto each backend.

No I/O. ``default`` keeps today's single-user behaviour: global roles act as roles in ``default``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from kawa.errors import KawaError
from kawa.portal.permissions import PERMISSIONS, Action, Role

DEFAULT_PROJECT = "default"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


class InvalidProjectName(KawaError):
    """A project name that is not lower-case letters, digits and dashes."""


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidProjectName(
            f"invalid project name {name!r}; use 1-40 lower-case letters, digits or dashes, starting with a letter"
        )
    return name


@dataclass(frozen=True)
class Project:
    name: str
    template: str = "empty"
    members: Mapping[str, Role] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()  # canonical names (project/name) others may read


@dataclass(frozen=True)
class User:
    name: str
    global_role: Role | None = None  # acts as the user's role in ``default``
    platform_admin: bool = False


def canonical(project: str, name: str) -> str:
    return f"{check_name(project)}/{name}"


def split(canonical_name: str) -> tuple[str, str]:
    project, sep, name = canonical_name.partition("/")
    if not sep or not name:
        return DEFAULT_PROJECT, canonical_name
    return project, name


def kafka_topic(project: str, name: str) -> str:
    """Topics of ``default`` keep their names; others get the prefix ``<project>.``."""
    return name if project == DEFAULT_PROJECT else f"{project}.{name}"


def s3_bucket(project: str, name: str) -> str:
    return name if project == DEFAULT_PROJECT else f"{project}--{name}"


def bucket_project(bucket: str, registered: Collection[str]) -> str:
    """The project a bucket belongs to: its ``P--`` prefix when ``P`` is a registered project, else ``default``."""
    prefix, sep, rest = bucket.partition("--")
    return prefix if sep and rest and prefix != DEFAULT_PROJECT and prefix in registered else DEFAULT_PROJECT


def k8s_namespace(project: str) -> str:
    return "kawa" if project == DEFAULT_PROJECT else f"kawa-{project}"


def role_in(user: User, project: Project) -> Role | None:
    role = project.members.get(user.name)
    if role is None and project.name == DEFAULT_PROJECT:
        return user.global_role
    return role


def can(user: User, project: Project, action: Action) -> bool:
    """Whether ``user`` may take ``action`` in ``project``, from the one permission map."""
    if user.platform_admin:
        return True
    role = role_in(user, project)
    return role is not None and action in PERMISSIONS[role]


def can_read_shared(user: User, owner: Project, canonical_name: str) -> bool:
    """Read access to another project's resource: only if that resource is shared, or the user may view it."""
    return canonical_name in owner.shared or can(user, owner, Action.VIEW)
