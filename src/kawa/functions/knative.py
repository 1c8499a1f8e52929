"""``kawa deploy knative``: an app's functions as Knative Services fed by KafkaSources.

Per function: a Knative ``Service`` running ``kawa serve-function`` (KPA annotations from the function's
scale settings, ``containerConcurrency`` from its concurrency, probes on the health paths), a
``KafkaSource`` (its consumer group, topic, initial offset; ``delivery`` with the retry count, exponential
backoff and a dead-letter sink) and a ``KafkaSink`` writing dead letters to ``<topic>.dlq``. One
``Containerfile`` builds the image for all of them.

Differences from the embedded host, by necessity: Knative validates ``window`` within 6 s..1 h and panic
thresholds within 110..1000 % (values are clamped, with a warning); the scale-to-zero grace period is a
cluster setting (``config-autoscaler``); a KafkaSource cannot filter, so the container acknowledges
filtered-out events (``--accept-filtered``) instead of sending them to the dead-letter sink; Knative's
dead letters carry ``knativeerror*`` extensions rather than Kawa's error headers.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kawa.errors import DeployError
from kawa.functions.app import App, FunctionSpec

PORT = 8080


@dataclass(frozen=True)
class KnativeOptions:
    app_ref: str
    image: str
    bootstrap_servers: Sequence[str] = ("my-cluster-kafka-bootstrap.kafka:9092",)
    namespace: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Rendered:
    """Manifests per function plus the warnings met while rendering (clamped knobs)."""

    manifests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    containerfile: str = ""
    warnings: list[str] = field(default_factory=list)


def resource_name(spec: FunctionSpec, suffix: str = "") -> str:
    """``<app>-<function>[-suffix]`` as a DNS-1035 label short enough for Knative revision names."""
    name = f"{spec.app}-{spec.name}{suffix}"
    if len(name) <= 50:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:6]
    return f"{name[:43].rstrip('-')}-{digest}"


def iso_duration(seconds: float) -> str:
    """``PT0.2S`` style ISO-8601 duration."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text or '0'}S"


def _clamp(value: float, low: float, high: float, what: str, warnings: list[str]) -> float:
    if value < low or value > high:
        clamped = min(max(value, low), high)
        warnings.append(f"{what} {value:g} is outside Knative's range {low:g}..{high:g}; rendered as {clamped:g}")
        return clamped
    return value


def _metadata(spec: FunctionSpec, name: str, options: KnativeOptions) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {
            "app.kubernetes.io/part-of": "kawa",
            "app.kubernetes.io/name": spec.app,
            "kawa.dev/function": spec.name,
        },
    }
    if options.namespace:
        meta["namespace"] = options.namespace
    return meta


def service_manifest(spec: FunctionSpec, options: KnativeOptions, warnings: list[str]) -> dict[str, Any]:
    name = resource_name(spec)
    window = _clamp(spec.stable_window_s, 6, 3600, f"{spec.qualified_name}: stable_window_s", warnings)
    panic_threshold = _clamp(
        spec.panic_threshold_pct, 110, 1000, f"{spec.qualified_name}: panic_threshold_pct", warnings
    )
    annotations = {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/target": str(spec.concurrency),
        "autoscaling.knative.dev/target-utilization-percentage": f"{spec.target_utilization * 100:g}",
        "autoscaling.knative.dev/min-scale": str(spec.min_scale),
        "autoscaling.knative.dev/max-scale": str(spec.max_scale),
        "autoscaling.knative.dev/window": f"{window:g}s",
        "autoscaling.knative.dev/panic-window-percentage": f"{spec.panic_window_pct:g}",
        "autoscaling.knative.dev/panic-threshold-percentage": f"{panic_threshold:g}",
    }
    if spec.initial_scale > 0:
        annotations["autoscaling.knative.dev/initial-scale"] = str(spec.initial_scale)
    env = [{"name": "KAWA_LOG", "value": "kafka://" + ",".join(options.bootstrap_servers)}]
    env += [{"name": k, "value": v} for k, v in sorted(options.env.items())]
    container = {
        "name": "function",
        "image": options.image,
        "args": ["serve-function", options.app_ref, spec.name, "--port", str(PORT), "--accept-filtered"],
        "ports": [{"name": "http1", "containerPort": PORT}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/health/readiness"}, "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health/liveness"}, "periodSeconds": 10, "failureThreshold": 3},
    }
    template_meta = {"labels": _metadata(spec, name, options)["labels"], "annotations": annotations}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": _metadata(spec, name, options),
        "spec": {
            "template": {
                "metadata": template_meta,
                "spec": {"containerConcurrency": spec.concurrency, "timeoutSeconds": 300, "containers": [container]},
            }
        },
    }


def dead_letter_sink_manifest(spec: FunctionSpec, options: KnativeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "eventing.knative.dev/v1alpha1",
        "kind": "KafkaSink",
        "metadata": _metadata(spec, resource_name(spec, "-dlq"), options),
        "spec": {
            "topic": spec.dead_letter_topic,
            "bootstrapServers": list(options.bootstrap_servers),
            "contentMode": "binary",
        },
    }


def kafka_source_manifest(spec: FunctionSpec, options: KnativeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "KafkaSource",
        "metadata": _metadata(spec, resource_name(spec), options),
        "spec": {
            "consumerGroup": spec.group,
            "bootstrapServers": list(options.bootstrap_servers),
            "topics": [spec.topic],
            "initialOffset": spec.initial_offset,
            "ordering": "ordered" if spec.ordered_by_key else "unordered",
            "sink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": resource_name(spec)}},
            "delivery": {
                "deadLetterSink": {
                    "ref": {
                        "apiVersion": "eventing.knative.dev/v1alpha1",
                        "kind": "KafkaSink",
                        "name": resource_name(spec, "-dlq"),
                    }
                },
                "retry": spec.retries,
                "backoffPolicy": "exponential",
                "backoffDelay": iso_duration(spec.backoff_s),
            },
        },
    }


CONTAINERFILE = """\
# Built by `kawa deploy knative`: one image for every function of app {app}.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PORT={port} KAWA_HOME=/tmp/kawa
WORKDIR /app
COPY . /app
# The project (with kawa as a dependency) when it has a pyproject.toml, else kawa alone.
RUN if [ -f pyproject.toml ]; then pip install .; else pip install kawa; fi
USER 65532:65532
EXPOSE {port}
# Each Knative Service passes: serve-function {ref} <function> --port {port}
ENTRYPOINT ["kawa"]
CMD ["--help"]
"""


def render(apps: App | Sequence[App], options: KnativeOptions) -> Rendered:
    """Manifests for every function of ``apps``."""
    apps = [apps] if isinstance(apps, App) else list(apps)
    out = Rendered()
    for app in apps:
        for spec in app.functions.values():
            out.manifests[resource_name(spec)] = [
                service_manifest(spec, options, out.warnings),
                dead_letter_sink_manifest(spec, options),
                kafka_source_manifest(spec, options),
            ]
    names = ", ".join(a.name for a in apps)
    out.containerfile = CONTAINERFILE.format(app=names, port=PORT, ref=options.app_ref)
    return out


def write(rendered: Rendered, directory: Path) -> list[Path]:
    """Write ``<app>-<function>.yaml`` (multi-document) per function and ``Containerfile``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, docs in rendered.manifests.items():
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        paths.append(path)
    containerfile = directory / "Containerfile"
    containerfile.write_text(rendered.containerfile)
    paths.append(containerfile)
    return paths


def apply(paths: Sequence[Path], kubectl: str | None = None) -> str:
    """``kubectl apply -f`` each manifest; a :class:`DeployError` when kubectl is missing or fails."""
    binary = kubectl or shutil.which("kubectl")
    if binary is None:
        raise DeployError(
            "kubectl is not on PATH: install it and select a cluster context (kubectl config use-context …), "
            "or apply the rendered files yourself with `kubectl apply -f DIR`"
        )
    args = [binary, "apply"]
    for path in paths:
        if path.suffix == ".yaml":
            args += ["-f", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise DeployError(f"kubectl apply failed ({result.returncode}): {detail}")
    return result.stdout
