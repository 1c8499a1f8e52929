"""Single sign-on: IdP claims → Kawa roles, and bearer JWT validation against the provider's JWKS.

Validation is Authlib's (JOSE): signature with a key from the provider's JWKS, ``iss``, ``aud``, ``exp`` and
``nbf``. Keys rotate: a token whose ``kid`` is not in the cached key set makes the verifier re-read the JWKS
once (at most every ``refresh_interval_s``), so a new key is accepted as soon as the provider publishes it, and
a key the provider has withdrawn stops verifying on the next re-read. Authlib and httpx are imported lazily
(the ``sso`` extra).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kawa.config import OidcConfig
from kawa.errors import InvalidCredentials
from kawa.portal.permissions import Role, parse_role
from kawa.portal.users import User

DEFAULT_PROJECT = "default"


class InvalidToken(InvalidCredentials):
    """A bearer JWT that is malformed, badly signed, expired, or for another issuer or audience."""


def roles_from_claims(
    claims: Mapping[str, Any], groups_claim: str, group_roles: Mapping[str, str]
) -> frozenset[tuple[str, Role]]:
    """The (project, role) pairs the IdP's groups grant; pure, so per-project roles extend it.

    ``group_roles`` maps a group to ``role`` (in project ``default``) or ``project:role``. A groups claim may
    be a list or one string; Keycloak-style paths (``/ml-team``) match with or without the leading slash.
    """
    raw = claims.get(groups_claim, [])
    groups = [raw] if isinstance(raw, str) else [g for g in raw if isinstance(g, str)] if isinstance(raw, list) else []
    pairs: set[tuple[str, Role]] = set()
    for group in groups:
        target = group_roles.get(group) or group_roles.get(group.lstrip("/"))
        if target is None:
            continue
        project, sep, role = target.rpartition(":")
        pairs.add((project if sep else DEFAULT_PROJECT, parse_role(role)))
    return frozenset(pairs)


_RANK = [Role.VIEWER, Role.DATA_ENGINEER, Role.DATA_SCIENTIST, Role.ML_ENGINEER, Role.ADMIN]


def global_role(pairs: Iterable[tuple[str, Role]], project: str = DEFAULT_PROJECT) -> Role:
    """Today's single role for ``project``: admin if granted, else the granted role listed last in the rank,
    else viewer (a signed-in user with no mapped group may look but not change)."""
    granted = {role for p, role in pairs if p == project}
    return max(granted, key=_RANK.index, default=Role.VIEWER)


def _kid(token: str) -> str | None:
    try:
        header_b64 = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    except (ValueError, IndexError) as exc:
        raise InvalidToken("the bearer token is not a JWT; send an access token from the identity provider") from exc
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


class JwtVerifier:
    """Checks bearer JWTs for one issuer and audience; thread-safe; keys from ``jwks_uri`` with rotation."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_uri: str,
        *,
        leeway_s: int = 30,
        refresh_interval_s: float = 5.0,
        fetch: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.issuer, self.audience, self.jwks_uri = issuer, audience, jwks_uri
        self.leeway_s, self.refresh_interval_s = leeway_s, refresh_interval_s
        self._fetch = fetch or _get_json
        self._lock = threading.Lock()
        self._keys: Any = None
        self._kids: set[str] = set()
        self._fetched_at = float("-inf")
        self.discovery: dict[str, Any] = {}  # the provider's discovery document, when built from_config

    @classmethod
    def from_config(cls, config: OidcConfig, fetch: Callable[[str], dict[str, Any]] | None = None) -> JwtVerifier:
        get = fetch or _get_json
        discovery = get(config.issuer.rstrip("/") + "/.well-known/openid-configuration")
        verifier = cls(
            str(discovery.get("issuer", config.issuer)),
            config.audience or config.client_id,
            str(discovery["jwks_uri"]),
            leeway_s=config.leeway_s,
            fetch=get,
        )
        verifier.discovery = dict(discovery)
        return verifier

    def _refresh(self, force: bool) -> Any:
        from authlib.jose import JsonWebKey

        with self._lock:
            now = time.monotonic()
            if self._keys is None or (force and now - self._fetched_at >= self.refresh_interval_s):
                document = self._fetch(self.jwks_uri)
                self._keys = JsonWebKey.import_key_set(document)
                self._kids = {k["kid"] for k in document.get("keys", []) if isinstance(k, dict) and "kid" in k}
                self._fetched_at = now
            return self._keys

    def verify(self, token: str, *, audience: str | None = None, nonce: str | None = None) -> dict[str, Any]:
        """The token's claims, or :class:`InvalidToken` saying what was wrong. ``audience`` overrides the API's
        (an ID token is for the client id); ``nonce``, when given, must be the token's ``nonce`` claim."""
        from authlib.jose import JsonWebToken
        from authlib.jose.errors import JoseError

        kid = _kid(token)
        keys = self._refresh(force=False)
        if kid is not None and kid not in self._kids:
            keys = self._refresh(force=True)  # the provider may have rotated its signing key
            if kid not in self._kids:
                raise InvalidToken(
                    f"the token's signing key {kid!r} is not in the provider's JWKS ({self.jwks_uri}): it was "
                    "withdrawn or the token is not from this provider; sign in again"
                )
        jwt = JsonWebToken(["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"])
        options = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": audience or self.audience},
            "exp": {"essential": True},
        }
        if nonce is not None:
            options["nonce"] = {"essential": True, "value": nonce}
        try:
            claims = jwt.decode(token, keys, claims_options=options)
            claims.validate(leeway=self.leeway_s)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(
                f"bearer token refused ({exc}); get a fresh token from the identity provider for audience "
                f"{self.audience!r}"
            ) from exc
        return dict(claims)


def _get_json(url: str) -> dict[str, Any]:
    import httpx

    try:
        response = httpx.get(url, timeout=10.0)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise InvalidToken(f"cannot read {url} from the identity provider ({exc}); check portal.oidc.issuer") from exc
    if not isinstance(document, dict):
        raise InvalidToken(f"{url} did not answer a JSON object; check portal.oidc.issuer")
    return document


class SingleSignOn:
    """The portal's view of ``portal.oidc``: the JWT verifier (built on first use) and claims → user."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._verifier: JwtVerifier | None = None
        self._lock = threading.Lock()

    @property
    def verifier(self) -> JwtVerifier:
        with self._lock:
            if self._verifier is None:
                self._verifier = JwtVerifier.from_config(self.config)
            return self._verifier

    def user_for_jwt(self, token: str) -> User:
        """The user a provider-issued bearer JWT names, with the role its groups map to (never stored)."""
        return self.user_for_claims(self.verifier.verify(token))

    def user_for_claims(self, claims: Mapping[str, Any]) -> User:
        """The user verified claims (a bearer JWT's, an ID token's) name, with the roles their groups map to."""
        name = claims.get("preferred_username") or claims.get("email") or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise InvalidToken("the token names no user (no preferred_username, email or sub claim)")
        pairs = roles_from_claims(claims, self.config.groups_claim, self.config.group_roles)
        issued = claims.get("iat")
        projects = sorted({p for p, _ in pairs} - {DEFAULT_PROJECT})
        return User(name, global_role(pairs), float(issued) if isinstance(issued, int | float) else time.time(),
                    project_roles=tuple((p, global_role(pairs, p)) for p in projects))  # fmt: skip
