"""Portal sign-in with the identity provider: the OpenID Connect authorization-code flow with PKCE.

``GET /login/sso?next=PATH`` sends the browser to the provider's authorization endpoint (from its discovery
document) with a fresh ``state``, ``nonce`` and PKCE ``code_challenge`` (S256). The three secrets and the page to
return to travel in a short-lived cookie signed with the portal's key (``SameSite=Lax``, so the provider's redirect
back brings it; nothing is kept in the server, so any portal replica can finish a sign-in).

``GET /login/callback?code=...&state=...`` checks the state against the cookie, exchanges the code at the token
endpoint with the PKCE verifier (and the client secret for a confidential client), and verifies the ID token with
Authlib: the provider's keys (JWKS, with rotation), ``iss``, ``aud`` (the client id), ``exp`` and the ``nonce``.
Its claims name the user and its groups the roles (``portal.oidc.group_roles``, per project too), exactly as for a
bearer JWT. The user is recorded as signed on by the provider (no password can log it in; a local user of the
same name is never taken over), a session starts and the browser goes on to ``next`` or the user's project.

Each sign-on, and each refusal after the provider answered, leaves an audit record (``sign-on``).
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kawa.errors import InvalidCredentials, KawaError, PortalError
from kawa.portal.auth import get_portal
from kawa.portal.security import cookie_secure, set_session_cookie
from kawa.portal.web.pages import _safe_next

if TYPE_CHECKING:
    from kawa.portal.runtime import Portal
    from kawa.portal.users import User

__all__ = ["SSO_COOKIE", "router"]

router = APIRouter(include_in_schema=False)

SSO_COOKIE = "kawa_sso"
SSO_MAX_AGE_S = 600  # a sign-in started more than ten minutes ago is started again
_SALT = "kawa.portal.sso"


def _serializer(portal: Portal) -> Any:
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(portal.secret, salt=_SALT)


def _callback_url(request: Request) -> str:
    return str(request.url_for("sso_callback"))


def _refuse(message: str, next_page: str = "/") -> RedirectResponse:
    response = RedirectResponse(f"/login?next={quote(next_page)}&error={quote(message)}", status_code=303)
    response.delete_cookie(SSO_COOKIE, path="/login")
    return response


@router.get("/login/sso")
def sso_begin(request: Request, next: str = "/", portal: Portal = Depends(get_portal)) -> Response:
    """Start a sign-in at the identity provider (see the module docstring)."""
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    if portal.sso is None:
        return _refuse("single sign-on is not configured here (portal.oidc in kawa.yaml); log in with a password")
    try:
        endpoint = str(portal.sso.verifier.discovery["authorization_endpoint"])
    except (KawaError, KeyError) as exc:
        return _refuse(f"the identity provider cannot be reached or names no authorization endpoint ({exc})")
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    config = portal.sso.config
    query = {
        "response_type": "code", "client_id": config.client_id, "redirect_uri": _callback_url(request),
        "scope": " ".join(config.scopes), "state": state, "nonce": nonce,
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
    }  # fmt: skip
    response = RedirectResponse(f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}", status_code=303)
    pending = _serializer(portal).dumps({"state": state, "nonce": nonce, "verifier": verifier,
                                         "next": _safe_next(next)})  # fmt: skip
    response.set_cookie(SSO_COOKIE, pending, max_age=SSO_MAX_AGE_S, httponly=True, samesite="lax",
                        secure=cookie_secure(request, portal.config), path="/login")  # fmt: skip
    return response


@router.get("/login/callback", name="sso_callback")
def sso_callback(request: Request, portal: Portal = Depends(get_portal)) -> Response:
    """Finish a sign-in: the provider redirected here with a code (or an error)."""
    from itsdangerous import BadData

    if portal.sso is None:
        return _refuse("single sign-on is not configured here (portal.oidc in kawa.yaml)")
    params = request.query_params
    try:
        pending = _serializer(portal).loads(request.cookies.get(SSO_COOKIE, ""), max_age=SSO_MAX_AGE_S)
    except BadData:
        return _refuse("the sign-in expired or was started elsewhere; sign in again")
    next_page = _safe_next(pending.get("next"))
    if params.get("error"):
        return _refuse(f"the identity provider refused the sign-in ({params.get('error')})", next_page)
    if not hmac.compare_digest(str(params.get("state", "")), str(pending.get("state"))) or not params.get("code"):
        return _refuse("the sign-in answer does not belong to this browser's sign-in; sign in again", next_page)
    try:
        user = _signed_on(request, portal, str(params["code"]), pending)
    except InvalidCredentials as exc:
        _audit(portal, "anonymous", "denied", 401)
        return _refuse(str(exc), next_page)
    _audit(portal, user.name, "ok", 200)
    secret, _session = portal.users.create_session(user, portal.config.portal.session_ttl_s)
    target = next_page
    if target == "/" and (project := portal.projects.landing(user)) is not None:
        target = f"/projects/{quote(project)}"
    # The session cookie is SameSite=Strict, and this response ends a navigation that began at the provider:
    # a redirect would not carry the cookie yet, so a page on this site moves on to the target itself.
    go, who = _escape(target), _escape(user.name)
    page = (f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={go}">'
            f'<title>Signed in</title><p>Signed in as {who}. <a href="{go}">Continue</a></p>')  # fmt: skip
    response = HTMLResponse(page)
    set_session_cookie(response, request, portal.config, secret)
    response.delete_cookie(SSO_COOKIE, path="/login")
    return response


def _signed_on(request: Request, portal: Portal, code: str, pending: dict[str, Any]) -> User:
    """Exchange ``code`` and verify the ID token; the user it names, recorded as signed on."""
    import httpx

    from kawa.portal.oidc import InvalidToken

    assert portal.sso is not None
    config, verifier = portal.sso.config, portal.sso.verifier
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": _callback_url(request),
            "client_id": config.client_id, "code_verifier": str(pending.get("verifier"))}  # fmt: skip
    auth = (config.client_id, config.client_secret.get_secret_value()) if config.client_secret is not None else None
    try:
        answer = httpx.post(str(verifier.discovery["token_endpoint"]), data=form, auth=auth, timeout=10.0)
        tokens = answer.json()
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise InvalidCredentials(f"the identity provider's token endpoint did not answer ({exc}); try again") from None
    if answer.status_code != 200 or not isinstance(tokens, dict) or "id_token" not in tokens:
        why = tokens.get("error", answer.status_code) if isinstance(tokens, dict) else answer.status_code
        raise InvalidCredentials(f"the identity provider did not issue an ID token ({why}); sign in again")
    try:
        claims = verifier.verify(str(tokens["id_token"]), audience=config.client_id, nonce=str(pending.get("nonce")))
        user = portal.sso.user_for_claims(claims)
    except InvalidToken as exc:
        raise InvalidCredentials(f"the identity provider's ID token was refused: {exc}") from None
    try:
        return portal.users.sign_on(user, verifier.issuer)
    except PortalError as exc:  # a user name the portal cannot hold
        raise InvalidCredentials(f"cannot sign in: {exc}") from None


def _audit(portal: Portal, user: str, result: str, status: int) -> None:
    from kawa.audit.record import AuditRecord

    try:
        portal.audit.append(AuditRecord(user=user, action="sign-on", resource="/login/callback", result=result,
                                        request_id=uuid.uuid4().hex, status=status))  # fmt: skip
    except Exception:  # the sign-in stands; the log is unreachable for now, as for every other record
        import logging

        logging.getLogger("kawa.portal.audit").error("could not write the audit record of a sign-on at %s",
                                                     time.strftime("%H:%M:%S"))  # fmt: skip


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
