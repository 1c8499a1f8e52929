"""``/metrics`` parses with Prometheus' own text parser, and its values equal the JSON API's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kawa.portal.permissions import Role
from tests.portal.apps import counts
from tests.portal.conftest import bearer, make_config
from tests.portal.test_api_functions import handled, host, produce, wait_for  # noqa: F401 (fixtures)
from tests.portal.test_api_store_xray import publish_results, xray  # noqa: F401 (fixture)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


def test_metrics_agree_with_the_api(
    client: Any, admin: dict[str, str], platform: Any, portal: Any, host: Any, xray: Any, tmp_path: Path  # noqa: F811
) -> None:
    from kawa.ml.registry import Registry

    produce(platform, 9, poison={4})
    wait_for(lambda: host.metrics()["shop.check"].succeeded == 8 and host.metrics()["shop.check"].dead_lettered == 1)
    wait_for(lambda: client.get("/api/functions/shop.check", headers=admin).json()["lag"] == 0)
    for gpu in (0, 1):
        assert client.post("/api/jobs", json={"entrypoint": "true", "gpu": gpu, "project": "p"},
                           headers=admin).status_code == 201
    artifact = tmp_path / "m"
    artifact.mkdir()
    registry = Registry(platform.config, platform.log)
    for _ in range(3):
        registry.register(str(artifact), "pneumonia")
    registry.promote("pneumonia", 2)
    registry.promote("pneumonia", 3, alias="challenger")
    registry.close()
    publish_results(platform, xray, [("Normal", 2, 0.1), ("Unsure", 2, 0.7), ("Normal", 3, 0.3)])
    portal.sampler.tick()

    response = client.get("/metrics", headers=admin)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    metrics = samples(response.text)

    for topic in client.get("/api/topics", headers=admin).json()["items"]:
        assert value(metrics, "kawa_topic_records_total", topic=topic["name"]) == topic["written"]
        assert value(metrics, "kawa_topic_records_held", topic=topic["name"]) == topic["records"]
        for consumer in topic["consumers"]:
            assert value(metrics, "kawa_consumer_lag", group=consumer["group"], topic=topic["name"],
                         owner=consumer["owner"]) == consumer["lag"]
    (fn,) = client.get("/api/functions", headers=admin).json()["items"]
    key = {"function": fn["name"], "app": fn["app"]}
    assert value(metrics, "kawa_function_replicas", **key) == fn["replicas"]
    assert value(metrics, "kawa_function_in_flight", **key) == fn["in_flight"]
    assert value(metrics, "kawa_function_events_total", **key, outcome="succeeded") == fn["succeeded"] == 8
    assert value(metrics, "kawa_function_events_total", **key, outcome="dead_lettered") == fn["dead_lettered"] == 1
    assert value(metrics, "kawa_function_errors_total", **key) == fn["errors"]
    assert value(metrics, "kawa_function_latency_ms", **key, quantile="0.99") == fn["latency_p99_ms"]
    assert value(metrics, "kawa_function_latency_ms", **key, quantile="0.5") == fn["latency_p50_ms"]

    jobs = client.get("/api/jobs", headers=admin).json()["items"]
    assert value(metrics, "kawa_jobs", state="queued", project="p") == len(jobs) == 2
    assert value(metrics, "kawa_gpus") == len(client.get("/api/jobs/resources", headers=admin).json()["gpus"]) == 2

    (model,) = client.get("/api/models", headers=admin).json()["items"]
    assert model["aliases"] == {"champion": 2, "challenger": 3}
    assert value(metrics, "kawa_model_alias_version", model="pneumonia", alias="champion") == 2
    assert value(metrics, "kawa_model_alias_version", model="pneumonia", alias="challenger") == 3
    assert value(metrics, "kawa_model_latest_version", model="pneumonia") == model["latest_version"] == 3

    board = client.get("/api/apps/xray/board", headers=admin).json()
    assert board["by_label"]["totals"] == {"Normal": 2, "Unsure": 1}
    for label, count in board["by_label"]["totals"].items():
        assert value(metrics, "kawa_results_total", app="xray", label=label) == count
    assert board["by_version"]["totals"] == {"2": 2, "3": 1}
    for version, count in board["by_version"]["totals"].items():
        assert value(metrics, "kawa_results_by_model_version_total", app="xray", model_version=version) == count
    for stage, count in counts(board).items():
        assert value(metrics, "kawa_app_objects", app="xray", stage=stage) == count

    # The Grafana dashboard queries only metrics that /metrics serves.
    served = {name for name, _labels in metrics}
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/kawa-portal.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\bkawa_[a-z0-9_]+", target["expr"])
    }
    assert len(queried) >= 15 and queried <= served, queried - served


def test_metrics_need_a_token_unless_configured_open(client: Any, tokens: dict[Role, str], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from kawa.platform import Platform
    from kawa.portal.app import create_app
    from kawa.portal.runtime import Portal

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(tokens[Role.VIEWER])).status_code == 200
    platform = Platform(make_config(tmp_path / "open", metrics_auth=False))
    portal = Portal(platform)
    try:
        with TestClient(create_app(portal)) as open_client:
            response = open_client.get("/metrics")
            assert response.status_code == 200
            assert "kawa_topic_records" in response.text
    finally:
        portal.stop()
        platform.stop()
