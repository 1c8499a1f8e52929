"""``kawa deploy knative``: rendered manifests validate against the Knative CRD schemas and carry the
function's settings; ``--apply`` runs kubectl or says clearly that it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kawa.errors import DeployError
from kawa.functions import App
from kawa.functions.knative import KnativeOptions, apply, iso_duration, render, resource_name, write
from tests.functions.conftest import ROOT

SCHEMAS = ROOT.parent / "shared" / "schemas" / "knative"
KAWA = str(Path(sys.executable).parent / "kawa")


def _strip(node: Any) -> Any:
    """Drop Kubernetes' x-kubernetes-* extensions, which JSON Schema does not know."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _schema(filename: str) -> dict[str, Any]:
    path = SCHEMAS / filename
    if not path.is_file():
        pytest.fail(
            f"Knative CRD schema {path} is missing: the manifest tests need ../shared/schemas/knative/ next to the "
            "repository (see its README); they cannot pass without it",
            pytrace=False,
        )
    crd = yaml.safe_load(path.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strip(v1["schema"]["openAPIV3Schema"])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.Draft7Validator]:
    return {
        "Service": jsonschema.Draft7Validator(_schema("serving.knative.dev_services.yaml")),
        "KafkaSource": jsonschema.Draft7Validator(_schema("sources.knative.dev_kafkasources.yaml")),
    }


def xray_app() -> App:
    app = App("xray")

    @app.function(topic="xray-images", filter={"type": {"prefix": "com.amazonaws.s3.ObjectCreated"}},
                  concurrency=4, min_scale=0, max_scale=8, retries=3, reply_topic="xray-results")
    def assess(event: Any, ctx: Any) -> None: ...

    @app.function(topic="xray-images", name="anonymize", concurrency=2, min_scale=1, max_scale=0, retries=5,
                  backoff_s=0.5, ordered_by_key=True, stable_window_s=2.0, panic_threshold_pct=105.0)
    def anonymize(event: Any, ctx: Any) -> None: ...

    return app


OPTIONS = KnativeOptions(app_ref="xrayapp:app", image="registry.local/xray:1", bootstrap_servers=("k1:9092", "k2:9092"),
                         namespace="kawa")


Validators = dict[str, jsonschema.Draft7Validator]


def test_rendered_manifests_validate_against_the_knative_crds(validators: Validators) -> None:
    rendered = render(xray_app(), OPTIONS)
    assert set(rendered.manifests) == {"xray-assess", "xray-anonymize"}
    checked = 0
    for docs in rendered.manifests.values():
        for doc in docs:
            if doc["kind"] in validators:
                errors = sorted(validators[doc["kind"]].iter_errors(doc), key=str)
                assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]
                checked += 1
            # Kubernetes' own rules the CRD schemas leave to the API server.
            annotations = doc.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
            assert all(isinstance(v, str) for v in annotations.values())
            assert len(doc["metadata"]["name"]) <= 63
    assert checked == 4


def test_the_validator_rejects_a_broken_manifest(validators: Validators) -> None:
    service = render(xray_app(), OPTIONS).manifests["xray-assess"][0]
    service["spec"]["template"]["spec"]["containerConcurrency"] = "four"
    assert list(validators["Service"].iter_errors(service))
    source = render(xray_app(), OPTIONS).manifests["xray-assess"][2]
    del source["spec"]["topics"]
    assert list(validators["KafkaSource"].iter_errors(source))


def test_the_service_carries_the_autoscaling_and_runtime_settings() -> None:
    service, sink, source = render(xray_app(), OPTIONS).manifests["xray-assess"]
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/target"] == "4"
    assert annotations["autoscaling.knative.dev/target-utilization-percentage"] == "70"
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert annotations["autoscaling.knative.dev/max-scale"] == "8"
    assert annotations["autoscaling.knative.dev/window"] == "60s"
    assert annotations["autoscaling.knative.dev/panic-window-percentage"] == "10"
    assert annotations["autoscaling.knative.dev/panic-threshold-percentage"] == "200"
    spec = template["spec"]
    assert spec["containerConcurrency"] == 4
    (container,) = spec["containers"]
    assert container["image"] == "registry.local/xray:1"
    assert container["args"][:3] == ["serve-function", "xrayapp:app", "assess"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveness"
    assert {"name": "KAWA_LOG", "value": "kafka://k1:9092,k2:9092"} in container["env"]
    assert service["metadata"]["namespace"] == "kawa"

    assert source["spec"]["consumerGroup"] == "kawa-fn-xray-assess"
    assert source["spec"]["bootstrapServers"] == ["k1:9092", "k2:9092"]
    assert source["spec"]["topics"] == ["xray-images"] and source["spec"]["initialOffset"] == "earliest"
    assert source["spec"]["sink"]["ref"] == {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                            "name": "xray-assess"}
    delivery = source["spec"]["delivery"]
    assert (delivery["retry"], delivery["backoffPolicy"], delivery["backoffDelay"]) == (3, "exponential", "PT0.2S")
    assert delivery["deadLetterSink"]["ref"]["name"] == sink["metadata"]["name"] == "xray-assess-dlq"
    assert sink["kind"] == "KafkaSink" and sink["spec"]["topic"] == "xray-images.dlq"


def test_out_of_range_knobs_are_clamped_with_a_warning() -> None:
    rendered = render(xray_app(), OPTIONS)
    service, _sink, source = rendered.manifests["xray-anonymize"]
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/window"] == "6s"
    assert annotations["autoscaling.knative.dev/panic-threshold-percentage"] == "110"
    assert len(rendered.warnings) == 2 and "stable_window_s" in rendered.warnings[0]
    assert source["spec"]["ordering"] == "ordered" and source["spec"]["delivery"]["backoffDelay"] == "PT0.5S"


def test_names_and_durations() -> None:
    app = App("a" * 40)
    app.function(name="f" * 40, topic="t")(lambda e, c: None)
    name = resource_name(app.get("f" * 40))
    assert len(name) <= 50 and name[0].isalpha()
    assert (iso_duration(0.2), iso_duration(1.0), iso_duration(12.345)) == ("PT0.2S", "PT1S", "PT12.345S")


APP_FILE = '''
import kawa

app = kawa.App("xray")


@app.function(topic="xray-images", concurrency=4, max_scale=8, reply_topic="xray-results")
def assess(event, ctx):
    return None
'''


def test_kawa_deploy_knative_writes_files_and_apply_needs_kubectl(tmp_path: Path) -> None:
    (tmp_path / "xrayapp.py").write_text(APP_FILE)
    out = tmp_path / "k8s"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no kubectl here
    result = subprocess.run(
        [KAWA, "deploy", "knative", "xrayapp:app", "-o", str(out), "--image", "xray:1",
         "--bootstrap-servers", "kafka:9092", "--apply"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "kubectl is not on PATH" in result.stderr
    docs = list(yaml.safe_load_all((out / "xray-assess.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Service", "KafkaSink", "KafkaSource"]
    assert "serve-function" in (out / "Containerfile").read_text()


def test_apply_runs_kubectl_on_every_manifest(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho applied\n')
    kubectl.chmod(0o755)
    paths = write(render(xray_app(), OPTIONS), tmp_path / "out")
    assert apply(paths, kubectl=str(kubectl)).strip() == "applied"
    args = calls.read_text().split()
    assert args[0] == "apply" and args.count("-f") == 2
    failing = tmp_path / "kubectl-fails"
    failing.write_text("#!/bin/sh\necho 'no context' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(DeployError, match="no context"):
        apply(paths, kubectl=str(failing))
