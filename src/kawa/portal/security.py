"""Secrets and cookie settings of the portal.

The secret key signs the login form's CSRF token (before a session exists); session cookies and API tokens
are random secrets checked against the user database, not signed data.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from kawa.errors import InvalidCredentials

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from kawa.config import KawaConfig

SESSION_COOKIE = "kawa_session"
LOGIN_CSRF_COOKIE = "kawa_login_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LOGIN_CSRF_MAX_AGE_S = 3600


def portal_dir(config: KawaConfig) -> Path:
    return Path(config.home).absolute() / "portal"


def users_db_path(config: KawaConfig) -> Path:
    return Path(config.portal.users_db) if config.portal.users_db else portal_dir(config) / "users.db"


def load_secret(config: KawaConfig) -> bytes:
    """The configured secret key, else one generated once and kept (mode 0600) under the Kawa home."""
    if config.portal.secret_key is not None:
        return config.portal.secret_key.get_secret_value().encode()
    path = portal_dir(config) / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    return key


class LoginCsrf:
    """Double-submit token for the login form: a random nonce in a cookie, its signature in the form."""

    def __init__(self, secret: bytes) -> None:
        from itsdangerous import TimestampSigner

        self._signer = TimestampSigner(secret, salt="kawa.portal.login")

    def issue(self) -> tuple[str, str]:
        """``(cookie_value, form_value)``."""
        nonce = secrets.token_urlsafe(18)
        return nonce, self._signer.sign(nonce).decode()

    def check(self, cookie_value: str | None, form_value: str | None) -> None:
        from itsdangerous import BadSignature

        if not cookie_value or not form_value:
            raise InvalidCredentials("the login form expired; reload the page and try again")
        try:
            nonce = self._signer.unsign(form_value, max_age=LOGIN_CSRF_MAX_AGE_S).decode()
        except BadSignature as exc:
            raise InvalidCredentials("the login form expired; reload the page and try again") from exc
        if not hmac.compare_digest(nonce, cookie_value):
            raise InvalidCredentials("the login form expired; reload the page and try again")


def set_session_cookie(response: Response, request: Request, config: KawaConfig, secret: str) -> None:
    """The signed-in session's cookie: HttpOnly, SameSite=Strict, Secure as :func:`cookie_secure` decides."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=config.portal.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, config),
        path="/",
    )


def cookie_secure(request: Request, config: KawaConfig) -> bool:
    """Whether cookies get the Secure flag: always/never as configured, else when the request is https."""
    mode = config.portal.cookie_secure
    if mode == "always":
        return True
    if mode == "never":
        return False
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"
