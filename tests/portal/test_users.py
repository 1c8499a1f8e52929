"""Users, passwords, API tokens and sessions in the portal's SQLite store, and the `kawa users` CLI."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kawa.errors import InvalidCredentials, PortalError, UserExists, UserNotFound
from kawa.portal.permissions import Role, UnknownRole
from kawa.portal.users import UserStore


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "users.db")


def test_add_and_authenticate(store: UserStore) -> None:
    user, password = store.add_user("ann", "ml-engineer", "s3cret-password")
    assert (user.name, user.role, password) == ("ann", Role.ML_ENGINEER, "s3cret-password")
    assert store.authenticate("ann", "s3cret-password").role is Role.ML_ENGINEER
    with pytest.raises(InvalidCredentials, match="wrong user name or password"):
        store.authenticate("ann", "wrong-password")
    with pytest.raises(InvalidCredentials, match="wrong user name or password"):
        store.authenticate("nobody", "s3cret-password")


def test_passwords_are_stored_as_argon2_hashes_only(store: UserStore) -> None:
    store.add_user("ann", "viewer", "s3cret-password")
    with sqlite3.connect(store.path) as db:
        (stored,) = db.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$")
    assert "s3cret-password" not in stored


def test_generated_password_and_validation(store: UserStore) -> None:
    _user, password = store.add_user("bob", "viewer")
    assert len(password) >= 16
    store.authenticate("bob", password)
    with pytest.raises(UserExists, match="already exists"):
        store.add_user("bob", "viewer")
    with pytest.raises(UnknownRole, match="use one of: viewer, data-engineer"):
        store.add_user("carl", "superuser")
    with pytest.raises(PortalError, match="at least 8"):
        store.add_user("dave", "viewer", "short")
    with pytest.raises(PortalError, match="invalid user name"):
        store.add_user("../x", "viewer")


def test_role_changes_disable_and_password_reset(store: UserStore) -> None:
    user, password = store.add_user("ann", "viewer", "first-password")
    assert store.set_role("ann", Role.ADMIN).role is Role.ADMIN
    cookie, _session = store.create_session(user, 60)
    store.set_disabled("ann", True)
    with pytest.raises(InvalidCredentials, match="disabled"):
        store.authenticate("ann", password)
    with pytest.raises(InvalidCredentials):
        store.session(cookie)  # disabling ends sessions
    store.set_disabled("ann", False)
    cookie, _session = store.create_session(user, 60)
    new = store.set_password("ann", "second-password")
    assert new == "second-password"
    with pytest.raises(InvalidCredentials):
        store.session(cookie)  # a password change ends sessions
    store.authenticate("ann", "second-password")
    with pytest.raises(UserNotFound, match="kawa users list"):
        store.set_role("nobody", "viewer")


def test_tokens_are_stored_as_digests_and_revocable(store: UserStore) -> None:
    store.add_user("ann", "data-scientist", "first-password")
    info, secret = store.create_token("ann", "ci")
    assert secret.startswith("kawa_") and len(secret) > 40
    assert store.user_for_token(secret).name == "ann"
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT * FROM tokens").fetchall()
    assert secret not in repr(rows)
    assert [t.label for t in store.tokens("ann")] == ["ci"]
    assert store.tokens("ann")[0].last_used_at is not None
    from kawa.portal.users import TokenNotFound

    with pytest.raises(TokenNotFound, match="no token"):
        store.revoke_token(info.id, user="someone-else")
    store.revoke_token(info.id, user="ann")
    with pytest.raises(InvalidCredentials, match="invalid or revoked"):
        store.user_for_token(secret)


def test_sessions_expire(store: UserStore) -> None:
    user, _ = store.add_user("ann", "viewer", "first-password")
    cookie, session = store.create_session(user, 0.2)
    assert store.session(cookie).csrf == session.csrf
    time.sleep(0.3)
    with pytest.raises(InvalidCredentials, match="expired"):
        store.session(cookie)
    cookie, _ = store.create_session(user, 60)
    store.end_session(cookie)
    with pytest.raises(InvalidCredentials):
        store.session(cookie)


def test_cli_users_add_list_token(tmp_path: Path) -> None:
    from kawa.cli import _register
    from kawa.cli.app import app
    from kawa.config import load_config
    from kawa.portal.security import users_db_path

    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["users", "add", "ann", "--role", "ml-engineer"])
    assert result.exit_code == 0, result.output
    password = result.output.split("shown once):")[1].split()[0]
    result = runner.invoke(app, ["users", "add", "bob", "--role", "viewer", "--password-stdin"],
                           input="bobs-password\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["users", "list"])
    assert "ann" in result.output and "ml-engineer" in result.output and "viewer" in result.output
    result = runner.invoke(app, ["users", "token", "bob", "--label", "grafana"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    store = UserStore(users_db_path(load_config()))
    assert store.authenticate("ann", password).role is Role.ML_ENGINEER
    assert store.authenticate("bob", "bobs-password").role is Role.VIEWER
    assert store.user_for_token(secret).name == "bob"
    result = runner.invoke(app, ["users", "set-role", "bob", "admin"])
    assert result.exit_code == 0 and store.get_user("bob").role is Role.ADMIN
    result = runner.invoke(app, ["users", "add", "carl", "--role", "wizard"])
    assert result.exit_code != 0
