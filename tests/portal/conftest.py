"""Portal fixtures: a real platform (embedded log, local store) under the test's home, the portal app in a
TestClient, and one user + API token per role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.config import KawaConfig, load_config
from kawa.platform import Platform
from kawa.portal.permissions import Role

PASSWORD = "correct horse battery"


def make_config(home: Path, **portal: Any) -> KawaConfig:
    overrides: dict[str, Any] = {
        "home": str(home),
        "portal": {"sample_interval_s": 0.5, "port": 0, **portal},
        "ml": {"inventory": {"cpus": 4, "memory": "8G", "gpus": 2}, "scheduler_tick_s": 0.05},
    }
    return load_config(**overrides)


@pytest.fixture
def kawa_config(tmp_path: Path) -> KawaConfig:
    return make_config(tmp_path / ".kawa")


@pytest.fixture
def platform(kawa_config: KawaConfig) -> Iterator[Platform]:
    platform = Platform(kawa_config)
    yield platform
    platform.stop()


@pytest.fixture
def portal(platform: Platform) -> Iterator[Any]:
    from kawa.portal.runtime import Portal

    portal = Portal(platform)
    yield portal
    portal.stop()


@pytest.fixture
def client(portal: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from kawa.portal.app import create_app

    with TestClient(create_app(portal), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def tokens(portal: Any) -> dict[Role, str]:
    """An API token per role (users ``<role>-user``)."""
    out = {}
    for role in Role:
        portal.users.add_user(f"{role.value}-user", role, PASSWORD)
        _info, secret = portal.users.create_token(f"{role.value}-user", "test")
        out[role] = secret
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(tokens: dict[Role, str]) -> dict[str, str]:
    return bearer(tokens[Role.ADMIN])


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still Argon2id, with test-sized cost (the default takes ~0.4 s per hash on a busy 2-core machine)."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr("kawa.portal.users.default_hasher", lambda: cheap)
