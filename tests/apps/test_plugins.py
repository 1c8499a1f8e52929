"""Apps as plugins: the ten-line example app of docs/extending.md, installed the way a package installs it (a
``kawa.apps`` entry point in a dist-info directory on the path), is found without being imported, gets its
own ``kawa demo`` entry, and the platform creates what it declares and runs its function when it starts it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kawa.apps.plugin import AppPlugin, BucketDecl, declared
from kawa.apps.registry import app_names, get_app, register_app, unregister_app
from kawa.apps.runtime import build_service, start_app
from kawa.config import KawaConfig, load_config
from kawa.errors import AppNotFound, ConfigError
from kawa.platform import Platform

KAWA = str(Path(sys.executable).parent / "kawa")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def example_app() -> str:
    """The example app's module, exactly as docs/extending.md shows it (the block after "echo_app.py")."""
    text = DOCS.read_text()
    found = re.search(r"`echo_app\.py`.*?```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "docs/extending.md lost its echo_app.py example"
    return found.group(1)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example installed in a directory on sys.path: its module and a dist-info naming its entry point."""
    site = tmp_path / "site"
    (site / "echo_app-0.1.dist-info").mkdir(parents=True)
    (site / "echo_app.py").write_text(example_app())
    (site / "echo_app-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-app\nVersion: 0.1\n")
    (site / "echo_app-0.1.dist-info" / "entry_points.txt").write_text("[kawa.apps]\necho = echo_app:plugin\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("echo_app", None)


def config_for(home: Path, **extra: object) -> KawaConfig:
    return load_config(
        None,
        env={},
        home=str(home),
        portal={"enabled": False},
        ml={"scheduler": False},
        **extra,  # type: ignore[arg-type]
    )


def echoed(platform: Platform, want: int, timeout: float = 120.0) -> int:
    """Events on echo-out, read from the beginning until ``want`` arrived or the deadline passed."""
    consumer = platform.log.consumer("test-echo-reader", ["echo-out"], auto_offset_reset="earliest")
    seen, deadline = 0, time.monotonic() + timeout
    try:
        while seen < want and time.monotonic() < deadline:
            seen += len(consumer.poll(timeout=0.25, max_records=100))
    finally:
        consumer.close()
    return seen


def test_an_installed_app_is_listed_without_importing_it_and_loaded_on_first_use(installed: Path) -> None:
    assert "echo" in app_names() and "xray" in app_names()
    assert "echo_app" not in sys.modules  # listing names imports no app code
    plugin = get_app("echo")
    assert plugin.name == "echo" and "echo_app" in sys.modules
    assert [b.name for b in declared(plugin).buckets] == ["echo-in"]


def test_an_unknown_app_names_the_installed_ones() -> None:
    with pytest.raises(AppNotFound, match=r"no app called 'nope' is installed \(installed: .*xray"):
        get_app("nope")


def test_bad_settings_name_the_field() -> None:
    from pydantic import BaseModel, ConfigDict

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        rate: float = 1.0

    with pytest.raises(ConfigError, match=r"apps\.strict in kawa.yaml is not valid: rate: "):
        declared(AppPlugin("strict", settings=Settings), {"rate": "fast"})


def test_the_platform_creates_what_the_app_declares_and_runs_its_function(installed: Path, tmp_path: Path) -> None:
    platform = Platform(config_for(tmp_path / ".kawa"))
    try:
        running = start_app(platform, "echo")
        assert platform.apps["echo"] is running and running.functions is not None
        assert platform.store.bucket_exists("echo-in")
        assert {"echo-in", "echo-out"} <= set(platform.log.list_topics())
        board = running.board
        assert board is not None and board.panels[0].name == "echo"
        assert running.phi_free_buckets() == ("echo-in",)
        for i in range(3):
            platform.store.put("echo-in", f"hello-{i}.txt", b"hi")
        assert echoed(platform, 3) == 3
    finally:
        platform.stop()
    assert platform.apps == {}  # stopping the platform stopped the app


def test_kawa_up_starts_the_apps_kawa_yaml_names(installed: Path, tmp_path: Path) -> None:
    platform = Platform(config_for(tmp_path / ".kawa", apps={"echo": {}}))
    platform.start()
    try:
        assert "apps" in [s.name for s in platform.services] and "echo" in platform.apps
        platform.store.put("echo-in", "one.txt", b"1")
        assert echoed(platform, 1) == 1
    finally:
        platform.stop()


def test_kawa_up_app_starts_a_plugin_named_by_import_string(installed: Path, tmp_path: Path) -> None:
    platform = Platform(config_for(tmp_path / ".kawa"))
    platform.app_refs = ["echo_app:plugin"]
    service = build_service(platform)
    assert service is not None and [p.name for p in service.plugins] == ["echo"]
    platform.stop()


def test_an_app_registered_from_code_is_found(tmp_path: Path) -> None:
    name = register_app(AppPlugin("scratch", buckets=lambda _s: (BucketDecl("scratch-data", phi=True),)))
    try:
        assert name in app_names() and get_app("scratch").name == "scratch"
        platform = Platform(config_for(tmp_path / ".kawa"))
        try:
            running = start_app(platform, "scratch")
            assert platform.store.bucket_exists("scratch-data") and running.phi_free_buckets() == ()
            assert running.functions is None and running.routes is None and running.board is None
        finally:
            platform.stop()
    finally:
        unregister_app("scratch")
    assert "scratch" not in app_names()


def test_kawa_demo_lists_the_installed_app_and_runs_its_demo(installed: Path, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "COLUMNS": "120",
        "PYTHONPATH": os.pathsep.join([str(installed), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "KAWA_PORTAL__ENABLED": "false",
    }
    listed = subprocess.run([KAWA, "demo", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^\W*echo\s", listed.stdout, re.MULTILINE), listed.stdout
    run = subprocess.run(
        [KAWA, "demo", "echo", "--count", "3", "--no-portal"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "echoed 3 of 3 objects" in run.stdout, run.stdout


def test_the_installed_example_gets_its_own_board_without_portal_code(installed: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from kawa.portal.app import create_app
    from kawa.portal.permissions import Role
    from kawa.portal.runtime import Portal

    platform = Platform(config_for(tmp_path / ".kawa"))
    portal: Portal | None = None
    try:
        start_app(platform, "echo")
        portal = Portal(platform)
        portal.users.add_user("admin-user", Role.ADMIN, "correct horse battery")
        _info, token = portal.users.create_token("admin-user", "test")
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(3):
            platform.store.put("echo-in", f"hello-{i}.txt", b"hi")
        assert echoed(platform, 3) == 3
        with TestClient(create_app(portal), base_url="http://127.0.0.1") as client:
            apps = client.get("/api/apps", headers=headers).json()["items"]
            assert [a["name"] for a in apps] == ["echo"]
            deadline, counts = time.monotonic() + 60, {}
            while counts != {"in": 3, "out": 3} and time.monotonic() < deadline:
                portal.sampler.tick()
                board = client.get("/api/apps/echo/board", headers=headers).json()
                counts = {c["label"]: c["value"] for c in board["echo"]["counts"]}
            assert counts == {"in": 3, "out": 3}, board
            assert board["panels"] == ["echo"] and board["echo"]["kind"] == "counters"
            page = client.get("/apps/echo", headers=headers)
            assert page.status_code == 200 and "Echo" in page.text
    finally:
        if portal is not None:
            portal.stop()
        platform.stop()
