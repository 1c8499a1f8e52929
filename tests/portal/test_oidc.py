"""Bearer JWT validation (Authlib) against JWKS served over real HTTP, and the groups → roles mapping.

The provider here is a small HTTP server publishing an OpenID discovery document and a JWKS, whose signing
key the tests rotate (a real provider does not let a test rotate its key or issue expired tokens at will). The
browser sign-in against a real OpenID provider process is tests/portal/test_sso_login.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from authlib.jose import JsonWebKey, JsonWebToken

from kawa.config import OidcConfig
from kawa.portal.oidc import InvalidToken, JwtVerifier, global_role, roles_from_claims
from kawa.portal.permissions import Role, UnknownRole
from tests.portal.conftest import make_config

AUDIENCE = "kawa-portal"


class Provider:
    """Serves /.well-known/openid-configuration and /jwks over HTTP; signs tokens with its current key."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.jwks_reads = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks"}
                elif self.path == "/jwks":
                    provider.jwks_reads += 1
                    body = {"keys": [k.as_dict(is_private=False) for k in provider.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.rotate()

    def rotate(self, keep_old: bool = True) -> Any:
        key = JsonWebKey.generate_key("RSA", 2048, {"kid": f"k{len(self.keys) + 1}", "alg": "RS256"}, True)
        self.keys = ([*self.keys] if keep_old else []) + [key]
        return key

    def token(self, key: Any | None = None, **overrides: Any) -> str:
        key = key or self.keys[-1]
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": AUDIENCE, "sub": "u1", "iat": now, "exp": now + 300}
        claims.update(overrides)
        header = {"alg": "RS256", "kid": key.as_dict()["kid"]}
        return JsonWebToken(["RS256"]).encode(header, claims, key).decode()


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    thread = threading.Thread(target=p.server.serve_forever, daemon=True)
    thread.start()
    yield p
    p.server.shutdown()
    p.server.server_close()
    thread.join()


@pytest.fixture
def verifier(provider: Provider) -> JwtVerifier:
    config = OidcConfig(issuer=provider.issuer, client_id="kawa", audience=AUDIENCE)
    v = JwtVerifier.from_config(config)
    v.refresh_interval_s = 0.0
    return v


def test_a_valid_token_is_accepted_with_its_claims(provider: Provider, verifier: JwtVerifier) -> None:
    claims = verifier.verify(provider.token(groups=["ml"]))
    assert claims["sub"] == "u1" and claims["groups"] == ["ml"]


def test_a_token_for_another_audience_is_refused(provider: Provider, verifier: JwtVerifier) -> None:
    with pytest.raises(InvalidToken, match="aud"):
        verifier.verify(provider.token(aud="some-other-app"))


def test_an_expired_token_is_refused(provider: Provider, verifier: JwtVerifier) -> None:
    past = int(time.time()) - 3600
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(provider.token(iat=past - 300, exp=past))


def test_a_token_from_another_issuer_is_refused(provider: Provider, verifier: JwtVerifier) -> None:
    with pytest.raises(InvalidToken, match="iss"):
        verifier.verify(provider.token(iss="https://evil.example"))


def test_a_token_signed_by_a_key_not_in_the_jwks_is_refused(provider: Provider, verifier: JwtVerifier) -> None:
    stranger = JsonWebKey.generate_key("RSA", 2048, {"kid": provider.keys[0].as_dict()["kid"]}, True)
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(provider.token(key=stranger))


def test_a_rotated_key_is_accepted_and_a_withdrawn_one_refused(provider: Provider, verifier: JwtVerifier) -> None:
    old = provider.keys[0]
    assert verifier.verify(provider.token())["sub"] == "u1"  # the verifier caches k1
    reads = provider.jwks_reads
    new = provider.rotate()  # k2 published next to k1
    assert verifier.verify(provider.token(key=new))["sub"] == "u1"
    assert provider.jwks_reads == reads + 1  # the unknown kid made it re-read the JWKS once
    assert verifier.verify(provider.token(key=old))["sub"] == "u1"  # k1 still published: still valid
    newest = provider.rotate(keep_old=False)  # k3 replaces k1 and k2 in the JWKS
    assert verifier.verify(provider.token(key=newest))["sub"] == "u1"  # k3 unknown: re-read, k1 dropped
    assert provider.jwks_reads == reads + 2
    with pytest.raises(InvalidToken, match="withdrawn"):
        verifier.verify(provider.token(key=old))

def test_an_unknown_kid_re_reads_the_jwks_at_most_once_per_interval(provider: Provider, verifier: JwtVerifier) -> None:
    verifier.refresh_interval_s = 3600.0
    verifier.verify(provider.token())
    reads = provider.jwks_reads
    stranger = JsonWebKey.generate_key("RSA", 2048, {"kid": "nobody"}, True)
    for _ in range(3):
        with pytest.raises(InvalidToken, match="not in the provider's JWKS"):
            verifier.verify(provider.token(key=stranger))
    assert provider.jwks_reads == reads  # a flood of bad kids cannot hammer the provider


def test_groups_map_to_project_roles() -> None:
    mapping = {"ml-team": "ml-engineer", "platform": "default:admin", "xray-ds": "xray:data-scientist"}
    pairs = roles_from_claims({"groups": ["/ml-team", "xray-ds", "unmapped"]}, "groups", mapping)
    assert pairs == {("default", Role.ML_ENGINEER), ("xray", Role.DATA_SCIENTIST)}
    assert global_role(pairs) is Role.ML_ENGINEER
    assert global_role(roles_from_claims({"groups": ["ml-team", "platform"]}, "groups", mapping)) is Role.ADMIN
    assert global_role(roles_from_claims({"roles": "platform"}, "roles", mapping)) is Role.ADMIN
    assert roles_from_claims({}, "groups", mapping) == frozenset()
    assert global_role(frozenset()) is Role.VIEWER
    with pytest.raises(UnknownRole):
        roles_from_claims({"groups": ["x"]}, "groups", {"x": "superuser"})


@pytest.fixture
def sso_client(provider: Provider, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from kawa.platform import Platform
    from kawa.portal.app import create_app
    from kawa.portal.runtime import Portal

    oidc = {
        "issuer": provider.issuer,
        "client_id": "kawa",
        "audience": AUDIENCE,
        "group_roles": {"ml-team": "ml-engineer", "platform": "default:admin", "xray-ds": "team-a:data-scientist"},
    }
    platform = Platform(make_config(tmp_path / ".kawa", oidc=oidc))
    from kawa.projects.registry import ProjectRegistry

    registry = ProjectRegistry.in_home(platform.config.home)
    for name in ("team-a", "team-b"):
        registry.create(name)
    portal = Portal(platform)
    try:
        with TestClient(create_app(portal), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        portal.stop()
        platform.stop()


def test_the_api_takes_provider_jwts_with_the_role_their_groups_map_to(provider: Provider, sso_client: Any) -> None:
    jwt = provider.token(preferred_username="ada", groups=["/ml-team"])
    me = sso_client.get("/api/me", headers={"Authorization": f"Bearer {jwt}"})
    assert me.status_code == 200, me.text
    assert me.json()["name"] == "ada" and me.json()["role"] == "ml-engineer"
    admin = provider.token(preferred_username="root", groups=["platform"])
    assert sso_client.get("/api/me", headers={"Authorization": f"Bearer {admin}"}).json()["role"] == "admin"
    nobody = provider.token(preferred_username="eve")
    assert sso_client.get("/api/me", headers={"Authorization": f"Bearer {nobody}"}).json()["role"] == "viewer"


def test_the_api_refuses_wrong_audience_and_expired_jwts(provider: Provider, sso_client: Any) -> None:
    past = int(time.time()) - 3600
    for jwt in (provider.token(aud="other"), provider.token(iat=past - 60, exp=past)):
        response = sso_client.get("/api/me", headers={"Authorization": f"Bearer {jwt}"})
        assert response.status_code == 401, response.text


def test_idp_groups_grant_roles_in_projects(provider: Provider, sso_client: Any) -> None:
    """``team-a:data-scientist`` in group_roles: a member of that IdP group is a data scientist in team-a (a
    registered project), sees it, and sees no other team's project."""
    member = provider.token(preferred_username="ida", groups=["xray-ds"])
    seen = sso_client.get("/api/projects", headers={"Authorization": f"Bearer {member}"}).json()
    assert [(p["name"], p["role"]) for p in seen] == [("default", "viewer"), ("team-a", "data-scientist")]
    outsider = provider.token(preferred_username="otto", groups=["ml-team"])
    seen = sso_client.get("/api/projects", headers={"Authorization": f"Bearer {outsider}"}).json()
    assert [(p["name"], p["role"]) for p in seen] == [("default", "ml-engineer")]
    hidden = sso_client.get("/api/projects/team-a", headers={"Authorization": f"Bearer {outsider}"})
    assert hidden.status_code == 404
