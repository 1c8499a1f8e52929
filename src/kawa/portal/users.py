"""Portal users, their API tokens and browser sessions: one SQLite file under the Kawa home.

Guarantees:

- Passwords are stored only as Argon2id hashes (argon2-cffi); a hash made with older parameters is
  upgraded on the next successful login.
- API tokens and session ids are random 256-bit secrets shown once; only their SHA-256 digests are stored,
  so a copy of the database does not let anyone log in.
- A disabled user, a revoked token or an expired session authenticates nobody.
- Safe to share between processes on one machine (``kawa users add`` while ``kawa up`` runs): every call
  opens a short transaction; SQLite serializes writers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kawa.errors import InvalidCredentials, PortalError, UserExists, UserNotFound
from kawa.portal.permissions import Role, parse_role

if TYPE_CHECKING:
    from argon2 import PasswordHasher

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    digest TEXT UNIQUE NOT NULL,
    label TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "kawa_"
SSO_MARKER = "sso:"  # the password hash of a user the identity provider signs on (no password logs it in)
MIN_PASSWORD = 8


class TokenNotFound(PortalError):
    """No API token has this id (or it is another user's)."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created_at: float
    disabled: bool = False
    project_roles: tuple[tuple[str, Role], ...] = ()  # roles in projects other than default from the IdP's groups


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    label: str
    created_at: float
    last_used_at: float | None


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires_at: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def default_hasher() -> PasswordHasher:
    """Argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile: 64 MiB, 3 passes)."""
    from argon2 import PasswordHasher

    return PasswordHasher()


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise PortalError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
            "or digit"
        )
    return name


def generate_password() -> str:
    return secrets.token_urlsafe(15)


class UserStore:
    """Users, tokens and sessions in ``path`` (created with its parent directory on first use)."""

    def __init__(self, path: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self._hasher: PasswordHasher | None = hasher
        self._hasher_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._read() as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
            columns = {r["name"] for r in db.execute("PRAGMA table_info(sessions)")}
            if "grants" not in columns:  # a users.db from before single sign-on: sessions gain their IdP grants
                db.execute("ALTER TABLE sessions ADD COLUMN grants TEXT NOT NULL DEFAULT ''")

    def _connect(self) -> sqlite3.Connection:
        # One short-lived connection per call: cheap for SQLite, and safe from any thread.
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._read() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @property
    def hasher(self) -> PasswordHasher:
        with self._hasher_lock:
            if self._hasher is None:
                self._hasher = default_hasher()
            return self._hasher

    # --- users ---------------------------------------------------------------------------------------

    def add_user(self, name: str, role: Role | str, password: str | None = None) -> tuple[User, str]:
        """Create a user; returns it with its password (a generated one when ``password`` is None)."""
        validate_name(name)
        parsed = parse_role(str(role))
        password = password if password is not None else generate_password()
        self._check_password(password)
        hashed = self.hasher.hash(password)
        now = time.time()
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (name, parsed.value, hashed, now),
                )
        except sqlite3.IntegrityError as exc:
            raise UserExists(
                f"user {name!r} already exists; change its role with `kawa users set-role {name} ROLE` or its "
                f"password with `kawa users reset-password {name}`"
            ) from exc
        return User(name, parsed, now), password

    def sign_on(self, user: User, issuer: str) -> User:
        """Record ``user``, signed on by the identity provider ``issuer``, with the role its IdP groups map to
        now (updated at every sign-on). Its row holds no password, so it cannot log in with one. A *local* user
        of the same name is never taken over: :class:`InvalidCredentials`. A disabled one stays disabled."""
        validate_name(user.name)
        marker = SSO_MARKER + issuer
        with self._tx() as db:
            row = db.execute("SELECT * FROM users WHERE name = ?", (user.name,)).fetchone()
            if row is not None and not str(row["password_hash"]).startswith(SSO_MARKER):
                raise InvalidCredentials(
                    f"the portal has a local user named {user.name!r}, so single sign-on cannot sign in as it; an "
                    "admin can rename or delete the local user (`kawa users delete NAME`)"
                )
            if row is None:
                db.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                           (user.name, user.role.value, marker, time.time()))  # fmt: skip
            else:
                db.execute("UPDATE users SET role = ?, password_hash = ? WHERE name = ?",
                           (user.role.value, marker, user.name))  # fmt: skip
            row = db.execute("SELECT * FROM users WHERE name = ?", (user.name,)).fetchone()
        if row["disabled"]:
            raise InvalidCredentials(f"user {user.name!r} is disabled; ask an admin to enable it")
        return dataclasses.replace(self._user(row), project_roles=user.project_roles)

    def get_user(self, name: str) -> User:
        with self._read() as db:
            row = db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UserNotFound(f"no portal user {name!r}; `kawa users list` shows them, `kawa users add` creates one")
        return self._user(row)

    @staticmethod
    def _user(row: sqlite3.Row) -> User:
        return User(row["name"], Role(row["role"]), row["created_at"], bool(row["disabled"]))

    def list_users(self) -> list[User]:
        with self._read() as db:
            return [self._user(r) for r in db.execute("SELECT * FROM users ORDER BY name")]

    def set_role(self, name: str, role: Role | str) -> User:
        parsed = parse_role(str(role))
        with self._tx() as db:
            if db.execute("UPDATE users SET role = ? WHERE name = ?", (parsed.value, name)).rowcount == 0:
                raise UserNotFound(f"no portal user {name!r}; `kawa users list` shows them")
        return self.get_user(name)

    def set_password(self, name: str, password: str | None = None) -> str:
        """Replace the password (generated when None) and end the user's sessions; returns the password."""
        password = password if password is not None else generate_password()
        self._check_password(password)
        hashed = self.hasher.hash(password)
        with self._tx() as db:
            if db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hashed, name)).rowcount == 0:
                raise UserNotFound(f"no portal user {name!r}; `kawa users list` shows them")
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))
        return password

    def set_disabled(self, name: str, disabled: bool) -> User:
        with self._tx() as db:
            if db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount == 0:
                raise UserNotFound(f"no portal user {name!r}; `kawa users list` shows them")
            if disabled:
                db.execute("DELETE FROM sessions WHERE user = ?", (name,))
        return self.get_user(name)

    def delete_user(self, name: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UserNotFound(f"no portal user {name!r}; `kawa users list` shows them")

    @staticmethod
    def _check_password(password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise PortalError(f"password too short: use at least {MIN_PASSWORD} characters")

    def authenticate(self, name: str, password: str) -> User:
        """The user when ``password`` is theirs and they are enabled; :class:`InvalidCredentials` otherwise."""
        from argon2.exceptions import InvalidHashError, VerificationError

        with self._read() as db:
            row = db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        hasher = self.hasher
        if row is None:
            # Spend the same time as a real check so user names cannot be probed by timing.
            hasher.hash(password)
            raise InvalidCredentials("wrong user name or password")
        try:
            hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError) as exc:
            raise InvalidCredentials("wrong user name or password") from exc
        if row["disabled"]:
            raise InvalidCredentials(f"user {name!r} is disabled; ask an admin to enable it")
        if hasher.check_needs_rehash(row["password_hash"]):
            with self._tx() as db:
                db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hasher.hash(password), name))
        return self._user(row)

    # --- API tokens ----------------------------------------------------------------------------------

    def create_token(self, name: str, label: str = "api") -> tuple[TokenInfo, str]:
        """A new API token for ``name``; the secret is returned once and stored only as a digest."""
        self.get_user(name)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(secrets.token_hex(6), name, label[:100] or "api", time.time(), None)
        with self._tx() as db:
            db.execute(
                "INSERT INTO tokens (id, user, digest, label, created_at) VALUES (?, ?, ?, ?, ?)",
                (info.id, name, _digest(secret), info.label, info.created_at),
            )
        return info, secret

    def tokens(self, name: str | None = None) -> list[TokenInfo]:
        sql = "SELECT * FROM tokens"
        args: tuple[str, ...] = ()
        if name is not None:
            sql, args = sql + " WHERE user = ?", (name,)
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY created_at", args).fetchall()
        return [TokenInfo(r["id"], r["user"], r["label"], r["created_at"], r["last_used_at"]) for r in rows]

    def revoke_token(self, token_id: str, user: str | None = None) -> None:
        """Delete a token (only ``user``'s own when given)."""
        sql = "DELETE FROM tokens WHERE id = ?"
        args: tuple[str, ...] = (token_id,)
        if user is not None:
            sql, args = sql + " AND user = ?", (token_id, user)
        with self._tx() as db:
            if db.execute(sql, args).rowcount == 0:
                raise TokenNotFound(f"no token {token_id!r}; list your tokens with GET /api/me/tokens")

    def user_for_token(self, secret: str) -> User:
        with self._read() as db:
            row = db.execute(
                "SELECT users.*, tokens.id AS token_id, tokens.last_used_at FROM tokens "
                "JOIN users ON users.name = tokens.user WHERE tokens.digest = ?",
                (_digest(secret),),
            ).fetchone()
        if row is None or row["disabled"]:
            raise InvalidCredentials("invalid or revoked API token; create one with POST /api/me/tokens")
        now = time.time()
        if row["last_used_at"] is None or now - row["last_used_at"] > 60:  # a write per minute, not per request
            with self._tx() as db:
                db.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (now, row["token_id"]))
        return self._user(row)

    # --- sessions ------------------------------------------------------------------------------------

    def create_session(self, user: User, ttl_s: float) -> tuple[str, Session]:
        """A new browser session; returns the cookie value (shown once) and the session."""
        secret = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user, secrets.token_urlsafe(24), now + ttl_s)
        grants = json.dumps([[p, r.value] for p, r in user.project_roles]) if user.project_roles else ""
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            db.execute(
                "INSERT INTO sessions (digest, user, csrf, created_at, expires_at, grants) VALUES (?, ?, ?, ?, ?, ?)",
                (_digest(secret), user.name, session.csrf, now, session.expires_at, grants),
            )
        return secret, session

    def session(self, secret: str) -> Session:
        with self._read() as db:
            row = db.execute(
                "SELECT users.*, sessions.csrf, sessions.expires_at, sessions.grants FROM sessions JOIN users "
                "ON users.name = sessions.user WHERE sessions.digest = ?",
                (_digest(secret),),
            ).fetchone()
        if row is None or row["disabled"] or row["expires_at"] < time.time():
            raise InvalidCredentials("session expired or signed out; log in again")
        user = self._user(row)
        if row["grants"]:  # the project roles the IdP's groups gave at sign-on, for this session
            user = dataclasses.replace(user, project_roles=tuple((p, Role(r)) for p, r in json.loads(row["grants"])))
        return Session(user, row["csrf"], row["expires_at"])

    def end_session(self, secret: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE digest = ?", (_digest(secret),))

    def close(self) -> None:
        """Nothing is held open between calls; kept for symmetry with the other stores."""
