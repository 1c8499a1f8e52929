"""Who is asking, and may they: FastAPI dependencies for every portal route.

A request is authenticated by an API token (``Authorization: Bearer kawa_…``) or by the session cookie.
Every route declares the action it needs with ``Depends(require(Action.X))``; cookie-authenticated
requests that change something must also carry the session's CSRF token (``X-CSRF-Token`` header, or the
``csrf_token`` form field), so another site cannot make a logged-in browser act.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from kawa.errors import InvalidCredentials, PermissionDenied
from kawa.portal.permissions import Action, allowed
from kawa.portal.runtime import Portal
from kawa.portal.security import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE
from kawa.portal.users import TOKEN_PREFIX, User

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

bearer_scheme = HTTPBearer(auto_error=False, description="an API token: `kawa users token NAME` or POST /api/me/tokens")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="the browser session")


@dataclass
class AuditNotes:
    """What a request asked for and disclosed, for its audit record: the action its route requires and whether
    it read (or tried to read) PHI. One per request, in ``request.state.audit``."""

    action: str | None = None
    phi_read: bool = False
    user: str | None = None  # who a request without a principal acts as: the name a login is for


def audit_notes(request: Request) -> AuditNotes:
    notes = getattr(request.state, "audit", None)
    if not isinstance(notes, AuditNotes):
        notes = AuditNotes()
        request.state.audit = notes
    return notes


@dataclass(frozen=True)
class Principal:
    user: User
    via: Literal["token", "session"]
    csrf: str | None = None  # the session's CSRF token (sessions only)
    notes: AuditNotes = field(default_factory=AuditNotes, compare=False)

    def can(self, action: Action | str) -> bool:
        return allowed(self.user.role, action)


class LoginRequired(InvalidCredentials):
    """An HTML page was asked for without a session: answered with a redirect to /login."""


def get_portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def client_address(request: Request) -> str:
    """The peer's address (the portal trusts no forwarding headers: uvicorn runs with proxy_headers off)."""
    return request.client.host if request.client is not None else "unknown"


def authenticate(request: Request, portal: Portal) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        if portal.sso is not None and not credentials.strip().startswith(TOKEN_PREFIX):
            return Principal(portal.sso.user_for_jwt(credentials.strip()), "token")  # a provider-issued JWT
        return Principal(portal.users.user_for_token(credentials.strip()), "token")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        session = portal.users.session(cookie)
        return Principal(session.user, "session", session.csrf)
    raise InvalidCredentials(
        "not logged in: send `Authorization: Bearer <token>` (create one with `kawa users token NAME`) or log in "
        "at /login"
    )


async def _csrf_from_request(request: Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def check_csrf(request: Request, principal: Principal) -> None:
    if principal.via != "session" or request.method in SAFE_METHODS:
        return
    token = await _csrf_from_request(request)
    if not token or principal.csrf is None or not hmac.compare_digest(token, principal.csrf):
        raise PermissionDenied(
            "missing or wrong CSRF token: reload the page and try again (API clients: use a bearer token, or send "
            "the session's token in the X-CSRF-Token header)"
        )


def require(action: Action) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the request and checks that its user's role may take ``action``."""

    async def dependency(
        request: Request,
        _bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
        _cookie: str | None = Depends(cookie_scheme),
    ) -> Principal:
        portal = get_portal(request)
        notes = audit_notes(request)
        notes.action = action.value
        principal = replace(authenticate(request, portal), notes=notes)
        request.state.principal = principal  # who asked, for the audit record even when refused below
        await check_csrf(request, principal)
        if not principal.can(action):
            raise PermissionDenied(
                f"role {principal.user.role.value!r} may not {action.value}; ask an admin for a role that may "
                "(see the roles table in docs/portal.md)"
            )
        return principal

    dependency.__name__ = f"require_{action.name.lower()}"
    return dependency


def require_on(kind: str, param: str, action: Action) -> Callable[..., Awaitable[Principal]]:
    """Like :func:`require`, for the bucket or topic the path parameter ``param`` names: ``action`` is checked in
    the registered project that owns it, with the user's role there, else with the global role (:func:`may`)."""
    authenticated = require(Action.VIEW)

    async def dependency(
        request: Request,
        _bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
        _cookie: str | None = Depends(cookie_scheme),
    ) -> Principal:
        principal = await authenticated(request, _bearer, _cookie)
        may(principal, get_portal(request), kind, str(request.path_params[param]), action)
        return principal

    dependency.__name__ = f"require_{action.name.lower()}"
    return dependency


def page_user(action: Action = Action.VIEW) -> Callable[..., Awaitable[Principal]]:
    """Like :func:`require` for HTML pages: no session → redirect to the login page."""
    check = require(action)

    async def dependency(request: Request) -> Principal:
        try:
            return await check(request, None, None)
        except InvalidCredentials as exc:
            if isinstance(exc, LoginRequired):
                raise
            raise LoginRequired(str(exc)) from exc

    return dependency


def may(principal: Principal, portal: Portal, kind: str, name: str, action: Action) -> None:
    """``action`` on bucket or topic ``name``, checked as (user, project, action): in the registered project that
    owns it by its prefix, with the user's role there (a platform admin may always); else with the global role."""
    may_in(principal, portal, portal.projects.owner(kind, name), action, f"{kind} {name!r}")


def may_in(principal: Principal, portal: Portal, project: str | None, action: Action, what: str) -> None:
    """``action`` on ``what`` of registered ``project`` with the user's role there; with ``project`` None (a
    resource of ``default``, or one labelled with no registered project) with the global role."""
    principal.notes.action = action.value
    if project is None:
        if not principal.can(action):
            raise PermissionDenied(
                f"role {principal.user.role.value!r} may not {action.value}; ask an admin for a role that may "
                "(see the roles table in docs/portal.md)"
            )
        return
    if not portal.projects.allows(principal.user, project, action):
        raise PermissionDenied(
            f"{what} belongs to project {project!r}, where you have no role that may {action.value}; "
            f"ask one of its admins (`kawa projects add-member {project} {principal.user.name} ROLE`)"
        )


def may_read_bucket(principal: Principal, portal: Portal, bucket: str) -> None:
    """Read gate for a bucket's objects: its project's view (see :func:`may`), then PHI: PHI-free buckets for
    everyone who may view them, the others for ``phi.read`` (in the owning project, or globally)."""
    project = portal.projects.owner("bucket", bucket)
    what = f"bucket {bucket!r}"
    may_in(principal, portal, project, Action.VIEW, what)
    if portal.store.phi.phi_free(bucket):
        return
    principal.notes.phi_read = True  # audited, allowed or not
    if project is not None:
        may_in(principal, portal, project, Action.PHI_READ, what)
        return
    if not principal.can(Action.PHI_READ):
        raise PermissionDenied(
            f"bucket {bucket!r} may hold PHI and role {principal.user.role.value!r} may not read PHI (phi.read); "
            "PHI-free buckets are listed with phi_free: true at GET /api/buckets"
        )
