"""The same job spec as a Kubernetes ``batch/v1`` Job (the cluster target of the job runner)."""

from __future__ import annotations

import json
import math
import re
import shlex
from typing import Any

from kawa.ml.jobs.spec import JobSpec

DEFAULT_IMAGE = "python:3.11-slim"


def _k8s_memory(n: int) -> str:
    mib = math.ceil(n / (1024 * 1024))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _k8s_cpu(cpu: float) -> str:
    return str(int(cpu)) if cpu == int(cpu) else f"{math.ceil(cpu * 1000)}m"


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (name or "job")[:52].rstrip("-")


def render_job(
    spec: JobSpec,
    *,
    image: str = DEFAULT_IMAGE,
    namespace: str | None = None,
    job_id: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Job manifest: one pod, no retries, resource requests = limits (GPUs as ``nvidia.com/gpu``).

    ``timeout_s`` becomes ``activeDeadlineSeconds``; the image must contain Kawa and the entry point's code.
    """
    res = spec.resources
    requests: dict[str, str] = {"cpu": _k8s_cpu(res.cpu)}
    if res.memory_bytes:
        requests["memory"] = _k8s_memory(res.memory_bytes)
    limits = dict(requests)
    if res.gpus:
        # Extended resources are whole units and must have requests == limits.
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(res.gpus)
    name = _dns_name(f"kawa-{spec.name or job_id or spec.entrypoint.split()[0].replace(':', '-')}")
    container_env = [
        {"name": "KAWA_JOB_PARAMS", "value": json.dumps(spec.params)},
        {"name": "KAWA_JOB_PROJECT", "value": spec.project},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if job_id:
        container_env.append({"name": "KAWA_JOB_ID", "value": job_id})
    container_env += [{"name": k, "value": v} for k, v in sorted({**spec.env, **(env or {})}.items())]
    command = (
        ["python", "-m", "kawa.ml.jobs.runner", spec.entrypoint.strip()]
        if spec.is_function
        else shlex.split(spec.entrypoint)
    )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "job",
                "image": image,
                "command": command,
                "env": container_env,
                "resources": {"requests": requests, "limits": limits},
            }
        ],
    }
    if res.gpus:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    labels = {"app.kubernetes.io/managed-by": "kawa", "kawa.dev/project": _dns_name(spec.project)}
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    if namespace:
        job["metadata"]["namespace"] = namespace
    if spec.timeout_s:
        job["spec"]["activeDeadlineSeconds"] = math.ceil(spec.timeout_s)
    return job


def render_yaml(spec: JobSpec, **kwargs: Any) -> str:
    import yaml

    return yaml.safe_dump(render_job(spec, **kwargs), sort_keys=False)
