"""The commands as a user runs them: GPU refusal, a real training job end to end, models CLI, k8s render."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kawa.config import KawaConfig

REPO = Path(__file__).resolve().parents[2]


def kawa(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kawa.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        timeout=240,
    )


def test_gpu_request_without_gpus_is_refused_clearly(ml_env: dict[str, str]) -> None:
    # An explicit inventory of 0 GPUs, and this machine's real discovery where it has no NVIDIA driver.
    cases: list[dict[str, str]] = [{"KAWA_ML__INVENTORY__GPUS": "0"}]
    if shutil.which("nvidia-smi") is None:
        cases.append({})
    for extra in cases:
        done = kawa("jobs", "submit", "kawa.ml.trainers:torch_mlp", "--gpu", "1", "--wait", env=extra)
        assert done.returncode == 1
        message = " ".join(done.stderr.split())
        assert "requested 1 GPU(s) but this machine has 0" in message
        assert "configure ml.inventory" in message
    assert "j-" not in kawa("jobs", "list").stdout  # nothing was queued


def test_gpu_job_with_fake_inventory_gets_its_device(ml_env: dict[str, str]) -> None:
    env = {"KAWA_ML__INVENTORY__GPUS": "2", "KAWA_ML__TRACKING": "off"}
    done = kawa("jobs", "submit", "sh -c 'echo visible=[$CUDA_VISIBLE_DEVICES]'", "--gpu", "2", "--wait", env=env)
    assert done.returncode == 0, done.stderr
    assert "visible=[0,1]" in done.stdout
    assert "succeeded" in done.stdout


def test_training_job_end_to_end(config: KawaConfig, ml_env: dict[str, str], model_name: str) -> None:
    """Submitted through the CLI, run by the scheduler, tracked in MLflow with lineage, registered, promoted."""
    done = kawa(
        "jobs",
        "submit",
        "kawa.ml.trainers:logistic_regression",
        "--param",
        f"model_name={model_name}",
        "--param",
        "n=300",
        "--project",
        "demo",
        "--cpu",
        "1",
        "--mem",
        "512M",
        "--wait",
        cwd=REPO,  # the job runs in the submitter's directory: the Kawa checkout, so it has a git commit
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.split("job ")[1].split()[0].strip()
    assert job_id.startswith("j-")
    result = json.loads((Path(config.home) / "jobs" / job_id / "result.json").read_text())
    assert result["version"] == 1 and result["accuracy"] > 0.7

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=ml_env["KAWA_ML__TRACKING_URI"])
    run = client.get_run(result["run_id"])
    assert run.data.params == {"n": "300", "features": "4", "seed": "0", "C": "1.0"}
    assert run.data.metrics["accuracy"] == pytest.approx(result["accuracy"])
    tags = run.data.tags
    assert tags["kawa.job_id"] == job_id and tags["kawa.project"] == "demo"
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert tags["kawa.code_version"].startswith(sha)
    assert tags["kawa.lineage.data.topic"] == "training-data" and tags["kawa.lineage.data.offsets"] == "0-300"
    artifacts = [a.path for a in client.list_artifacts(result["run_id"])] + [
        m.name for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])
    ]
    assert "model" in artifacts

    assert kawa("models", "promote", model_name, "1").returncode == 0
    versions = json.loads(kawa("models", "versions", model_name, "--json").stdout)
    assert versions[0]["version"] == 1 and versions[0]["aliases"] == ["champion"]
    assert versions[0]["lineage"]["kawa.job_id"] == job_id
    assert versions[0]["metrics"]["accuracy"] == pytest.approx(result["accuracy"])
    listing = kawa("models", "list").stdout
    assert model_name in listing and "champion→1" in listing
    rollback = kawa("models", "rollback", model_name)
    assert rollback.returncode == 1 and "no earlier version" in rollback.stderr

    jobs = kawa("jobs", "list").stdout
    assert job_id in jobs and "succeeded" in jobs
    logs = kawa("jobs", "logs", job_id).stdout
    assert f"kawa job {job_id}: kawa.ml.trainers:logistic_regression" in logs


def test_cancel_and_render_commands(ml_env: dict[str, str], tmp_path: Path) -> None:
    submitted = kawa("jobs", "submit", "sleep 30", "--project", "p1")
    assert submitted.returncode == 0
    job_id = submitted.stdout.split("job ")[1].split()[0]
    cancelled = kawa("jobs", "cancel", job_id)  # queued (no scheduler runs): cancelled at once
    assert "cancelled" in cancelled.stdout
    out = tmp_path / "job.yaml"
    rendered = kawa("jobs", "render", "kawa.ml.trainers:torch_mlp", "--gpu", "1", "--mem", "4G", "-o", str(out))
    assert rendered.returncode == 0, rendered.stderr
    manifest = yaml.safe_load(out.read_text())
    assert manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert manifest["metadata"]["namespace"] == "kawa"  # the default project's namespace
    team = yaml.safe_load(kawa("jobs", "render", "m:f", "--project", "team-a").stdout)
    assert team["metadata"]["namespace"] == "kawa-team-a"  # where `kawa projects render team-a` puts its quota


def test_kawa_import_and_help_stay_light() -> None:
    code = (
        "import sys, kawa, kawa.ml, kawa.ml.jobs, kawa.cli; kawa.cli._register(); "
        "heavy = [m for m in ('mlflow', 'sklearn', 'onnxruntime', 'torch', 'uvicorn', 'numpy') if m in sys.modules]; "
        "print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    helped = kawa("--help")
    assert helped.returncode == 0 and "serve-model" in helped.stdout and "jobs" in helped.stdout
