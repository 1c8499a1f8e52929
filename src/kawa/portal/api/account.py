"""Who am I, my API tokens, the users (admins), and which capabilities this platform has."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from kawa.portal.api.common import ERRORS, LOGIN_ERRORS
from kawa.portal.auth import Principal, audit_notes, client_address, get_portal, require
from kawa.portal.login import throttled_login
from kawa.portal.permissions import PERMISSIONS, Action, Role
from kawa.portal.runtime import Portal

router = APIRouter(prefix="/api", tags=["account"], responses=ERRORS)

NAME = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]


class MeOut(BaseModel):
    name: str
    role: Role
    actions: list[str]
    csrf_token: str | None = Field(None, description="the session's CSRF token (sessions only)")


class LoginIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1000)


class CapabilityOut(BaseModel):
    name: str
    configured: bool
    reason: str | None = None


class TokenIn(BaseModel):
    label: str = Field("api", min_length=1, max_length=100)


class TokenOut(BaseModel):
    id: str
    label: str
    created_at: float
    last_used_at: float | None = None


class NewTokenOut(TokenOut):
    token: str = Field(description="the secret; shown only now")


class UserOut(BaseModel):
    name: str
    role: Role
    created_at: float
    disabled: bool


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    role: Role
    password: str | None = Field(None, min_length=8, max_length=200, description="generated when omitted")


class NewUserOut(UserOut):
    password: str = Field(description="shown only now")


class UserPatch(BaseModel):
    role: Role | None = None
    disabled: bool | None = None


@router.get("/me", response_model=MeOut)
def me(principal: Principal = Depends(require(Action.VIEW))) -> MeOut:
    actions = sorted(a.value for a in PERMISSIONS[principal.user.role])
    return MeOut(name=principal.user.name, role=principal.user.role, actions=actions, csrf_token=principal.csrf)


@router.post("/login", response_model=MeOut, responses=LOGIN_ERRORS)
def api_login(body: LoginIn, request: Request, response: Response, portal: Portal = Depends(get_portal)) -> MeOut:
    """Log in with a password: sets the session cookie and returns the session's CSRF token. Failed logins
    are throttled per account and per client address: 429 with ``Retry-After`` (seconds) while refused."""
    from kawa.portal.security import set_session_cookie

    notes = audit_notes(request)
    notes.user, notes.action = body.name, "login"  # the record names who logged in (or tried to)
    user = throttled_login(portal, body.name, body.password, client_address(request))
    secret, session = portal.users.create_session(user, portal.config.portal.session_ttl_s)
    set_session_cookie(response, request, portal.config, secret)
    actions = sorted(a.value for a in PERMISSIONS[user.role])
    return MeOut(name=user.name, role=user.role, actions=actions, csrf_token=session.csrf)


@router.get("/capabilities", response_model=list[CapabilityOut])
def capabilities(
    _: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[CapabilityOut]:
    return [CapabilityOut(name=c.name, configured=c.configured, reason=c.reason) for c in portal.capabilities()]


@router.get("/me/tokens", response_model=list[TokenOut])
def my_tokens(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> list[TokenOut]:
    return [
        TokenOut(id=t.id, label=t.label, created_at=t.created_at, last_used_at=t.last_used_at)
        for t in portal.users.tokens(principal.user.name)
    ]


@router.post("/me/tokens", response_model=NewTokenOut, status_code=201)
def create_token(
    body: TokenIn, principal: Principal = Depends(require(Action.TOKENS_OWN)), portal: Portal = Depends(get_portal)
) -> NewTokenOut:
    info, secret = portal.users.create_token(principal.user.name, body.label)
    return NewTokenOut(id=info.id, label=info.label, created_at=info.created_at, token=secret)


@router.delete("/me/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: Principal = Depends(require(Action.TOKENS_OWN)),
    portal: Portal = Depends(get_portal),
) -> None:
    portal.users.revoke_token(token_id, principal.user.name)


@router.get("/users", response_model=list[UserOut])
def list_users(
    _: Principal = Depends(require(Action.USERS_MANAGE)), portal: Portal = Depends(get_portal)
) -> list[UserOut]:
    return [
        UserOut(name=u.name, role=u.role, created_at=u.created_at, disabled=u.disabled)
        for u in portal.users.list_users()
    ]


@router.post("/users", response_model=NewUserOut, status_code=201)
def add_user(
    body: UserIn, _: Principal = Depends(require(Action.USERS_MANAGE)), portal: Portal = Depends(get_portal)
) -> NewUserOut:
    user, password = portal.users.add_user(body.name, body.role, body.password)
    return NewUserOut(name=user.name, role=user.role, created_at=user.created_at, disabled=False, password=password)


@router.patch("/users/{name}", response_model=UserOut)
def update_user(
    name: NAME,
    body: UserPatch,
    _: Principal = Depends(require(Action.USERS_MANAGE)),
    portal: Portal = Depends(get_portal),
) -> UserOut:
    user = portal.users.get_user(name)
    if body.role is not None:
        user = portal.users.set_role(name, body.role)
    if body.disabled is not None:
        user = portal.users.set_disabled(name, body.disabled)
    return UserOut(name=user.name, role=user.role, created_at=user.created_at, disabled=user.disabled)
