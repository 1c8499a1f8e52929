"""Logging in through the form, cookie security, CSRF on session requests, bearer tokens, logout."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kawa.portal.permissions import Role
from kawa.portal.security import LOGIN_CSRF_COOKIE, SESSION_COOKIE
from tests.portal.conftest import PASSWORD, bearer


def login(client: Any, name: str, password: str = PASSWORD) -> Any:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    data = {"username": name, "password": password, "csrf_token": token, "next": "/functions"}
    return client.post("/login", data=data, follow_redirects=False)


def set_cookie_headers(response: Any) -> list[str]:
    return [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]


def test_pages_need_a_session(client: Any) -> None:
    response = client.get("/models", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/models")
    assert client.get("/api/topics").status_code == 401
    assert client.get("/api/topics", headers=bearer("kawa_not-a-token")).status_code == 401


def test_login_sets_a_strict_httponly_session_cookie(client: Any, tokens: dict[Role, str]) -> None:
    response = login(client, "viewer-user")
    assert response.status_code == 303 and response.headers["location"] == "/functions"
    cookie = next(c for c in set_cookie_headers(response) if c.startswith(f"{SESSION_COOKIE}="))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # plain http here; see the https test
    me = client.get("/api/me")
    assert me.status_code == 200 and me.json()["name"] == "viewer-user" and me.json()["csrf_token"]
    assert client.get("/functions").status_code == 200


def test_cookie_is_secure_over_https(portal: Any, tokens: dict[Role, str]) -> None:
    from fastapi.testclient import TestClient

    from kawa.portal.app import create_app

    with TestClient(create_app(portal), base_url="https://portal.example") as https:
        response = login(https, "viewer-user")
        cookie = next(c for c in set_cookie_headers(response) if c.startswith(f"{SESSION_COOKIE}="))
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}


def test_wrong_password_and_missing_login_csrf(client: Any, tokens: dict[Role, str]) -> None:
    response = login(client, "viewer-user", "not-the-password")
    assert response.status_code == 303 and "error=" in response.headers["location"]
    assert SESSION_COOKIE not in client.cookies
    client.get("/login")
    response = client.post("/login", data={"username": "viewer-user", "password": PASSWORD, "csrf_token": "forged"},
                           follow_redirects=False)
    assert "expired" in response.headers["location"] and SESSION_COOKIE not in client.cookies
    client.cookies.delete(LOGIN_CSRF_COOKIE)


def test_session_requests_that_change_things_need_the_csrf_token(client: Any, tokens: dict[Role, str]) -> None:
    login(client, "admin-user")
    csrf = client.get("/api/me").json()["csrf_token"]
    assert client.post("/api/topics", json={"name": "no-csrf"}).status_code == 403
    assert client.post("/api/topics", json={"name": "bad-csrf"}, headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert client.post("/api/topics", json={"name": "with-csrf"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    # Forms carry it as a field.
    assert client.post("/jobs", data={"entrypoint": "true"}, follow_redirects=False).status_code == 403
    ok = client.post("/jobs", data={"entrypoint": "true", "csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and "job=" in ok.headers["location"]


def test_bearer_tokens_need_no_csrf(client: Any, tokens: dict[Role, str]) -> None:
    response = client.post("/api/topics", json={"name": "by-token"}, headers=bearer(tokens[Role.ADMIN]))
    assert response.status_code == 201


def test_logout_ends_the_session(client: Any, tokens: dict[Role, str]) -> None:
    login(client, "viewer-user")
    csrf = client.get("/api/me").json()["csrf_token"]
    old = client.cookies.get(SESSION_COOKIE)
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    client.cookies.set(SESSION_COOKIE, old)
    assert client.get("/api/me").status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example/"])
def test_login_never_redirects_off_site(client: Any, tokens: dict[Role, str], target: str) -> None:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    response = client.post("/login", data={"username": "viewer-user", "password": PASSWORD, "csrf_token": token,
                                           "next": target}, follow_redirects=False)
    assert response.headers["location"] == "/"


def test_security_headers(client: Any) -> None:
    response = client.get("/login")
    assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_my_tokens(client: Any, tokens: dict[Role, str]) -> None:
    headers = bearer(tokens[Role.VIEWER])
    created = client.post("/api/me/tokens", json={"label": "grafana"}, headers=headers)
    assert created.status_code == 201
    new = created.json()
    assert client.get("/api/me", headers=bearer(new["token"])).json()["name"] == "viewer-user"
    labels = [t["label"] for t in client.get("/api/me/tokens", headers=headers).json()]
    assert labels == ["test", "grafana"]
    assert client.delete(f"/api/me/tokens/{new['id']}", headers=headers).status_code == 204
    assert client.get("/api/me", headers=bearer(new["token"])).status_code == 401
    unknown = client.delete("/api/me/tokens/not-a-token-id", headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"] == "TokenNotFound"
    # Another user's token is not found either (its id is not the caller's to learn about).
    other = client.post("/api/me/tokens", json={"label": "x"}, headers=bearer(tokens[Role.ADMIN])).json()
    assert client.delete(f"/api/me/tokens/{other['id']}", headers=headers).status_code == 404
    assert client.get("/api/me", headers=bearer(other["token"])).status_code == 200
