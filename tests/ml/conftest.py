"""Fixtures for the model lifecycle tests.

MLflow's sqlite store takes seconds to create (schema migrations), so one tracking database per test session
is shared; tests keep apart by using unique model names. ``HOME`` and MLflow's config dir are pointed into
temporary folders so nothing is written to the real home.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.config import KawaConfig, load_config


@pytest.fixture(scope="session")
def tracking_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="session")
def _tracking_db(tracking_dir: Path) -> str:
    uri = f"sqlite:///{tracking_dir / 'mlflow.db'}"
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema once
    return uri


@pytest.fixture
def ml_env(_tracking_db: str, tracking_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """KAWA_* variables pointing tracking at the session's sqlite store (inherited by job subprocesses)."""
    env = {
        "KAWA_ML__TRACKING_URI": _tracking_db,
        "KAWA_ML__ARTIFACT_ROOT": (tracking_dir / "artifacts").as_uri(),
        "KAWA_ML__SCHEDULER_TICK_S": "0.05",
        "KAWA_ML__KILL_GRACE_S": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_CONFIG_DIR", str(tmp_path / "home" / "mlflow"))
    return env


@pytest.fixture
def config(ml_env: dict[str, str]) -> KawaConfig:
    return load_config()


@pytest.fixture
def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def memory_log(config: KawaConfig) -> Iterator[Any]:
    from kawa.log import open_log

    log = open_log("memory:", config)
    yield log
    log.close()


@pytest.fixture
def job_module(tmp_path: Path) -> str:
    """A module importable by jobs started in tmp_path (the test's cwd): small entry points for tests."""
    (tmp_path / "jobfns.py").write_text(
        textwrap.dedent('''
        import json, os, subprocess, sys, time
        from pathlib import Path

        def record_env(out, hold=None, timeout=30.0):
            """Write this job's env to OUT, then wait until the file HOLD exists (or timeout)."""
            Path(out).write_text(json.dumps({
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "KAWA_JOB_ID": os.environ.get("KAWA_JOB_ID"),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "pid": os.getpid(),
            }))
            deadline = time.monotonic() + timeout
            while hold and not Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return {"ok": True}

        def spawn_and_sleep(pidfile, seconds=60):
            """Start a grandchild, record its pid and sleep: cancel must kill both."""
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(%d)" % seconds])
            Path(pidfile).write_text(str(child.pid))
            time.sleep(seconds)

        def fail():
            raise ValueError("boom")
    ''')
    )
    return "jobfns"
