"""Serving for real: `kawa up` starts the portal as a service, `kawa.portal.serve` gives a handle with a URL,
live event streams deliver updates over HTTP, and stopping is quick even with a browser connected."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kawa.errors import PortalError
from kawa.platform import Platform
from tests.portal.conftest import bearer, make_config


def test_kawa_up_serves_the_portal(tmp_path: Path) -> None:
    platform = Platform(make_config(tmp_path / ".kawa"))
    platform.start()
    try:
        server = platform.portal_server
        assert server is not None
        assert "portal" in [s.name for s in platform.services]
        response = httpx.get(f"{server.url}/login", timeout=10)
        assert response.status_code == 200 and "Log in" in response.text
        assert httpx.get(f"{server.url}/openapi.json", timeout=10).json()["info"]["title"] == "Kawa portal"
        # The job scheduler of `kawa up` is the one the portal reports on.
        login = server.ensure_admin()
        assert login is not None and login.name == "admin" and len(login.password) >= 16
        assert server.ensure_admin() is None  # credentials are printed once
        token = server.portal.users.create_token("admin")[1]
        resources = httpx.get(f"{server.url}/api/jobs/resources", headers=bearer(token), timeout=10).json()
        assert resources["scheduler_here"] is True
    finally:
        platform.stop()
    assert platform.portal_server is None


def test_disabled_portal_is_not_served(tmp_path: Path) -> None:
    from kawa.portal.server import build_service

    assert build_service(Platform(make_config(tmp_path / ".kawa", enabled=False))) is None


def test_serve_streams_live_updates_and_stops_quickly(tmp_path: Path) -> None:
    from kawa.log.base import TopicSpec
    from kawa.portal import serve

    platform = Platform(make_config(tmp_path / ".kawa", sample_interval_s=0.2))
    server = serve(platform)
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
    assert server.portal is not None
    server.portal.users.add_user("ann", "viewer", "first-password")
    token = server.portal.users.create_token("ann")[1]
    platform.log.create_topic(TopicSpec("live"))
    updates: list[dict[str, Any]] = []
    done = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{server.url}/api/stream/overview", headers=bearer(token), timeout=30) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    updates.append(json.loads(line[6:]))
                    if len(updates) >= 3:
                        done.set()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert done.wait(15), f"only {len(updates)} updates arrived"
    assert any(node["id"] == "topic:live" for node in updates[-1]["nodes"])
    started = time.monotonic()
    server.stop()  # the stream is still open
    assert time.monotonic() - started < 8
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/login", timeout=2)
    platform.stop()


def test_a_busy_port_says_what_to_do(tmp_path: Path) -> None:
    from kawa.portal import serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        platform = Platform(make_config(tmp_path / ".kawa"))
        with pytest.raises(PortalError, match="KAWA_PORTAL__PORT"):
            serve(platform, port=port)
        platform.stop()


def test_kawa_portal_command_serves_alone(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "KAWA_HOME": str(tmp_path / ".kawa"), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    kawa = Path(sys.executable).with_name("kawa")
    process = subprocess.Popen([str(kawa), "portal", "--port", "0"], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "portal on http" in line:
                break
        assert "no portal users yet" in "".join(lines)
        url = lines[-1].split("portal on ")[1].split()[0]
        assert httpx.get(f"{url}/login", timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
