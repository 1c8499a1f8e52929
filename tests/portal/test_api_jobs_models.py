"""Jobs (queue, allocated GPUs on a fake inventory, logs, cancel, requests that can never fit) and models
(versions with metrics and lineage, promote, rollback, the alias event) through the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.events import from_record
from tests.portal.test_api_functions import wait_for


@pytest.fixture
def scheduler(platform: Any) -> Iterator[Any]:
    """The job scheduler running in the portal's process, as under `kawa up`."""
    from kawa.ml.jobs import scheduler_service

    service = scheduler_service(platform)
    assert service is not None
    service.start()
    platform.services.append(service)
    yield service
    platform.services.remove(service)
    service.stop()


def test_submit_run_and_read_logs(client: Any, admin: dict[str, str], scheduler: Any) -> None:
    response = client.post("/api/jobs", json={"entrypoint": "sh -c 'echo trained on $CUDA_VISIBLE_DEVICES'",
                                              "cpu": 1, "memory": "256M", "gpu": 1, "project": "vision"},
                           headers=admin)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] in ("queued", "starting", "running") and job["gpu"] == 1 and job["memory_bytes"] == 256 * 2**20
    wait_for(lambda: client.get(f"/api/jobs/{job['id']}", headers=admin).json()["state"] == "succeeded")
    done = client.get(f"/api/jobs/{job['id']}", headers=admin).json()
    assert done["exit_code"] == 0 and len(done["gpus_allocated"]) == 1
    logs = client.get(f"/api/jobs/{job['id']}/logs", headers=admin)
    assert logs.status_code == 200 and f"trained on {done['gpus_allocated'][0]}" in logs.text
    listed = client.get("/api/jobs", headers=admin).json()
    assert listed["configured"] is True and [j["id"] for j in listed["items"]] == [job["id"]]
    resources = client.get("/api/jobs/resources", headers=admin).json()
    assert resources["cpus"] == 4 and [g["index"] for g in resources["gpus"]] == [0, 1]
    assert resources["scheduler_here"] is True


def test_running_job_holds_its_gpus_and_can_be_cancelled(client: Any, admin: dict[str, str], scheduler: Any) -> None:
    job = client.post("/api/jobs", json={"entrypoint": "sleep 30", "gpu": 2}, headers=admin).json()
    wait_for(lambda: client.get(f"/api/jobs/{job['id']}", headers=admin).json()["state"] == "running")
    resources = client.get("/api/jobs/resources", headers=admin).json()
    assert {g["job"] for g in resources["gpus"]} == {job["id"]}
    cancelled = client.post(f"/api/jobs/{job['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200
    wait_for(lambda: client.get(f"/api/jobs/{job['id']}", headers=admin).json()["state"] == "cancelled")


def test_a_request_that_can_never_fit_is_refused(client: Any, admin: dict[str, str]) -> None:
    response = client.post("/api/jobs", json={"entrypoint": "true", "gpu": 3}, headers=admin)
    assert response.status_code == 422
    assert "requested 3 GPU(s) but this machine has 2" in response.json()["detail"]
    assert client.get("/api/jobs/j-nope", headers=admin).status_code == 404
    assert client.post("/api/jobs", json={"entrypoint": "true", "memory": "lots"}, headers=admin).status_code == 422


def test_jobs_page_submits_with_resources(client: Any, tokens: Any, scheduler: Any) -> None:
    from tests.portal.test_auth import login

    login(client, "data-scientist-user")
    csrf = client.get("/api/me").json()["csrf_token"]
    response = client.post("/jobs", data={"entrypoint": "echo from-the-form", "cpu": "1", "memory": "64M", "gpu": "1",
                                          "project": "p1", "csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    job_id = response.headers["location"].split("job=")[1].split("&")[0]
    wait_for(lambda: client.get(f"/api/jobs/{job_id}").json()["state"] == "succeeded")
    page = client.get(f"/jobs?job={job_id}")
    assert "from-the-form" in page.text and "fake-gpu" in page.text


# --- models -----------------------------------------------------------------------------------------


@pytest.fixture
def registry(platform: Any, tmp_path: Path) -> Iterator[Any]:
    from kawa.ml.registry import Registry

    registry = Registry(platform.config, platform.log)
    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "MLmodel").write_text("flavors: {}\n")
    client = registry.client
    experiment = client.create_experiment("portal-test")
    for auc in (0.81, 0.9):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "auc", auc)
        client.set_terminated(run.info.run_id)
        registry.register(str(artifact), "pneumonia", run_id=run.info.run_id,
                          tags={"kawa.lineage.data.bucket": f"xray-images#{auc}", "kawa.job_id": f"j-{auc}"})
    yield registry
    registry.close()


def test_models_versions_promote_rollback(client: Any, admin: dict[str, str], registry: Any, platform: Any) -> None:
    assert client.get("/api/models", headers=admin).json()["items"] == [
        {"name": "pneumonia", "latest_version": 2, "aliases": {}}
    ]
    versions = client.get("/api/models/pneumonia/versions", headers=admin).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["metrics"] == {"auc": 0.9} and versions[1]["metrics"] == {"auc": 0.81}
    assert versions[0]["lineage"] == {"kawa.lineage.data.bucket": "xray-images#0.9", "kawa.job_id": "j-0.9"}
    moved = client.post("/api/models/pneumonia/promote", json={"version": 1}, headers=admin).json()
    assert moved == {"model": "pneumonia", "alias": "champion", "version": 1, "previous_version": None,
                     "action": "promote"}
    client.post("/api/models/pneumonia/promote", json={"version": 2}, headers=admin)
    assert client.get("/api/models", headers=admin).json()["items"][0]["aliases"] == {"champion": 2}
    back = client.post("/api/models/pneumonia/rollback", json={"alias": "champion"}, headers=admin).json()
    assert back["version"] == 1 and back["previous_version"] == 2 and back["action"] == "rollback"
    events = _read_all(platform, "kawa.models")
    assert [(e["version"], e["action"]) for e in events] == [(1, "promote"), (2, "promote"), (1, "rollback")]
    assert client.post("/api/models/pneumonia/promote", json={"version": 9}, headers=admin).status_code == 404
    assert client.get("/api/models/unknown/versions", headers=admin).status_code == 404


def test_models_page_promotes_from_a_button(client: Any, tokens: Any, registry: Any) -> None:
    from tests.portal.test_auth import login

    login(client, "ml-engineer-user")
    page = client.get("/models")
    assert 'data-testid="promote-pneumonia-2"' in page.text and "auc=0.9" in page.text
    csrf = client.get("/api/me").json()["csrf_token"]
    response = client.post("/models/pneumonia/promote", data={"version": "2", "alias": "champion", "csrf_token": csrf})
    assert response.status_code == 200 and "pneumonia@champion now points to version 2" in response.text
    assert 'data-testid="alias-pneumonia-champion">champion → v2' in response.text


def test_models_not_configured_when_tracking_is_off(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from kawa.platform import Platform
    from kawa.portal.app import create_app
    from kawa.portal.runtime import Portal
    from tests.portal.conftest import bearer, make_config

    config = make_config(tmp_path / "off").model_copy(
        update={"ml": make_config(tmp_path / "off").ml.model_copy(update={"tracking": False})}
    )
    platform = Platform(config)
    portal = Portal(platform)
    portal.users.add_user("ann", "admin", "first-password")
    token = portal.users.create_token("ann")[1]
    try:
        with TestClient(create_app(portal)) as client:
            body = client.get("/api/models", headers=bearer(token)).json()
            assert body == {"configured": False, "reason": body["reason"], "items": []}
            assert "ml.tracking" in body["reason"]
            response = client.post("/api/models/x/promote", json={"version": 1}, headers=bearer(token))
            assert response.status_code == 409
    finally:
        portal.stop()
        platform.stop()


def _read_all(platform: Any, topic: str) -> list[dict[str, Any]]:
    consumer = platform.log.consumer(f"test-{time.time_ns()}", [topic])
    out = []
    try:
        for _ in range(20):
            batch = consumer.poll(timeout=0.2)
            out.extend(from_record(r).get_data() for r in batch)
            if not batch and out:
                break
    finally:
        consumer.close()
    return out
