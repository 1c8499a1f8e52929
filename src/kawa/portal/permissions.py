"""Roles and the actions each may take: the one permission map every portal check reads.

The same table is written out for people in ``docs/portal.md``. Reads of data without PHI need only
``portal.view``; objects of a bucket that is not declared PHI-free (its listing, metadata and content) need
``phi.read``; every mutating endpoint names its own action.
"""

from __future__ import annotations

from enum import StrEnum

from kawa.errors import PortalError


class Role(StrEnum):
    VIEWER = "viewer"
    DATA_ENGINEER = "data-engineer"
    DATA_SCIENTIST = "data-scientist"
    ML_ENGINEER = "ml-engineer"
    ADMIN = "admin"


class Action(StrEnum):
    VIEW = "portal.view"  # dashboards and every read of PHI-free data
    PHI_READ = "phi.read"  # objects of PHI-bearing buckets; raw dead-letter payloads
    DEADLETTERS_READ = "deadletters.read"  # dead-letter records: reason, function, attempts
    DEADLETTERS_REDRIVE = "deadletters.redrive"
    TOPICS_WRITE = "topics.write"  # create topics
    BUCKETS_WRITE = "buckets.write"  # create buckets, upload and delete objects
    ROUTES_MANAGE = "routes.manage"  # apply and delete routes
    JOBS_SUBMIT = "jobs.submit"
    JOBS_CANCEL = "jobs.cancel"
    MODELS_PROMOTE = "models.promote"  # promote and roll back aliases
    EXPERIMENTS_MANAGE = "experiments.manage"  # create and stop experiments
    TOKENS_OWN = "tokens.own"  # create and revoke one's own API tokens
    USERS_MANAGE = "users.manage"  # add users, change roles, reset passwords
    AUDIT_READ = "audit.read"  # the audit trail (who did what, and every PHI read)


_EVERYONE = {Action.VIEW, Action.TOKENS_OWN}

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset(_EVERYONE),
    Role.DATA_ENGINEER: frozenset(
        _EVERYONE
        | {
            Action.PHI_READ,
            Action.DEADLETTERS_READ,
            Action.DEADLETTERS_REDRIVE,
            Action.TOPICS_WRITE,
            Action.BUCKETS_WRITE,
            Action.ROUTES_MANAGE,
        }
    ),
    Role.DATA_SCIENTIST: frozenset(
        _EVERYONE | {Action.DEADLETTERS_READ, Action.JOBS_SUBMIT, Action.JOBS_CANCEL, Action.EXPERIMENTS_MANAGE}
    ),
    Role.ML_ENGINEER: frozenset(
        _EVERYONE
        | {
            Action.DEADLETTERS_READ,
            Action.DEADLETTERS_REDRIVE,
            Action.JOBS_SUBMIT,
            Action.JOBS_CANCEL,
            Action.MODELS_PROMOTE,
            Action.EXPERIMENTS_MANAGE,
        }
    ),
    Role.ADMIN: frozenset(Action),
}
"""Role → the actions it may take. Admin may take every action."""


class UnknownRole(PortalError):
    """A role name that is not one of :class:`Role`."""


def parse_role(name: str) -> Role:
    try:
        return Role(name)
    except ValueError as exc:
        raise UnknownRole(f"unknown role {name!r}; use one of: {', '.join(r.value for r in Role)}") from exc


def allowed(role: Role | str, action: Action | str) -> bool:
    """Whether ``role`` may take ``action``."""
    try:
        return Action(action) in PERMISSIONS[Role(role)]
    except ValueError:
        return False
