"""The distributed shape: a real `mlflow server` process as the remote tracking server and registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.ml.predictors import ModelManager
from kawa.ml.registry import Registry
from kawa.ml.serving import free_port
from tests.ml.helpers import make_config

MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # it spawns workers: stop the group
        env={**os.environ, "HOME": str(tmp_path / "server-home")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # mlflow server imports for a minute or more on a busy machine
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start:\n" + (tmp_path / "mlflow-server.log").read_text())
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.timeout(600)  # the server start alone may take minutes on a busy machine
def test_remote_tracking_server(
    config: KawaConfig, memory_log: Any, mlflow_server: str, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAWA_ML__TRACKING_URI", mlflow_server)
    monkeypatch.delenv("KAWA_ML__ARTIFACT_ROOT")
    remote = make_config(config, tracking_uri=mlflow_server, artifact_root=None)
    from kawa.ml.trainers import logistic_regression

    v1 = logistic_regression(model_name, n=200, seed=0)["version"]
    v2 = logistic_regression(model_name, n=200, seed=1, flavor="onnx")["version"]
    assert (v1, v2) == (1, 2)

    registry = Registry(remote, memory_log)
    registry.promote(model_name, v1)
    versions = registry.versions(model_name)
    assert [v.version for v in versions] == [2, 1]
    assert versions[1].lineage["kawa.lineage.data.offsets"] == "0-200"
    # The server holds the registry: its REST API sees the alias.
    r = httpx.get(
        f"{mlflow_server}/api/2.0/mlflow/registered-models/alias", params={"name": model_name, "alias": "champion"}
    )
    assert r.json()["model_version"]["version"] == "1"

    x = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    with ModelManager(remote, memory_log, poll_interval_s=0.2) as manager:
        handle = manager.get(f"{model_name}@champion")
        assert handle.current().flavor == "sklearn"
        first = handle.predict(x)
        registry.promote(model_name, v2)
        deadline = time.monotonic() + 15
        while handle.version != v2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handle.version == v2 and handle.current().flavor == "onnx"
        assert handle.predict(x).shape == first.shape
        # Artifacts came over HTTP into the Kawa home's model cache.
        assert (Path(remote.home) / "models-cache" / model_name / str(v2) / ".complete").exists()
    assert registry.rollback(model_name).version == v1
    registry.close()
