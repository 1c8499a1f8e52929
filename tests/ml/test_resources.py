"""GPU discovery (nvidia-smi output, NVML), inventory overrides, the placement policy, k8s manifests."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.config import InventoryConfig
from kawa.errors import InvalidJobSpec
from kawa.ml.jobs import JobSpec, render_job, render_yaml
from kawa.ml.jobs.policy import Allocated, Waiting, place
from kawa.ml.jobs.spec import Resources, parse_params
from kawa.ml.resources import (
    NVIDIA_SMI_QUERY,
    Gpu,
    Inventory,
    build_inventory,
    discover_gpus,
    gpus_from_nvml,
    parse_memory,
    parse_nvidia_smi,
)

# `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits` on a 2-GPU host.
NVIDIA_SMI_SAMPLE = """\
0, GPU-5c4d2a8e-9f3b-7c1e-a2d4-8b6f0e1c3a57, NVIDIA H100 80GB HBM3, 81559
1, GPU-e1b7f3c2-4a6d-58e9-b0c1-7d2e9f4a6b38, NVIDIA H100 80GB HBM3, 81559
"""


def test_parse_nvidia_smi_sample() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI_SAMPLE)
    assert gpus == [
        Gpu(0, "GPU-5c4d2a8e-9f3b-7c1e-a2d4-8b6f0e1c3a57", "NVIDIA H100 80GB HBM3", 81559),
        Gpu(1, "GPU-e1b7f3c2-4a6d-58e9-b0c1-7d2e9f4a6b38", "NVIDIA H100 80GB HBM3", 81559),
    ]


def test_parse_nvidia_smi_odd_lines() -> None:
    assert parse_nvidia_smi("\n") == []
    gpu = parse_nvidia_smi("3, GPU-x, Tesla V100-SXM2-16GB, [N/A]\n")[0]
    assert (gpu.index, gpu.memory_mib) == (3, 0)
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi("garbage")


def test_discover_through_nvidia_smi_when_nvml_is_absent() -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, NVIDIA_SMI_SAMPLE, "")

    class NoDriver:
        def nvmlInit(self) -> None:
            raise RuntimeError("NVML Shared Library Not Found")

    gpus, source = discover_gpus(nvml=NoDriver(), run=run)
    assert source == "nvidia-smi" and len(gpus) == 2
    assert calls == [NVIDIA_SMI_QUERY]


class FakeNvml:
    """The subset of the pynvml module Kawa uses, holding two devices."""

    def __init__(self) -> None:
        self.initialised = 0
        self.devices = [
            (b"NVIDIA A100-SXM4-40GB", b"GPU-aaaa", 40 * 1024**3),
            ("NVIDIA H100 80GB HBM3", "GPU-bbbb", 80 * 1024**3),
        ]

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> Any:
        return self.devices[h][0]

    def nvmlDeviceGetUUID(self, h: int) -> Any:
        return self.devices[h][1]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=self.devices[h][2], free=0, used=0)


def test_nvml_path_through_an_injected_module() -> None:
    nvml = FakeNvml()
    gpus = gpus_from_nvml(nvml)
    assert gpus == [
        Gpu(0, "GPU-aaaa", "NVIDIA A100-SXM4-40GB", 40960),
        Gpu(1, "GPU-bbbb", "NVIDIA H100 80GB HBM3", 81920),
    ]
    assert nvml.initialised == 0  # shut down again
    found, source = discover_gpus(nvml=FakeNvml(), run=None)
    assert source == "nvml" and len(found) == 2
    inventory = build_inventory(InventoryConfig(cpus=8), nvml=FakeNvml())
    assert inventory.gpu_count == 2 and inventory.cpus == 8 and inventory.source == "nvml"


def test_configured_inventory_overrides_discovery() -> None:
    inv = build_inventory(InventoryConfig(cpus=4, gpus=2, memory="16G"))
    assert (inv.cpus, inv.memory_bytes, inv.gpu_count) == (4, 16 * 1024**3, 2)
    assert [g.index for g in inv.gpus] == [0, 1]
    assert "configured" in inv.source


def test_parse_memory_and_params() -> None:
    assert parse_memory("4G") == 4 * 1024**3
    assert parse_memory("512Mi") == 512 * 1024**2
    assert parse_memory("1.5GB") == int(1.5 * 1024**3)
    assert parse_memory(None) == 0
    with pytest.raises(InvalidJobSpec, match="invalid memory size"):
        parse_memory("lots")
    assert parse_params(["lr=0.1", "epochs=3", "name=resnet", "flag=true"]) == {
        "lr": 0.1,
        "epochs": 3,
        "name": "resnet",
        "flag": True,
    }
    with pytest.raises(InvalidJobSpec, match="NAME=VALUE"):
        parse_params(["oops"])


# --- placement policy --------------------------------------------------------------------------------

INV = Inventory(4, 16 * 1024**3, tuple(Gpu(i, f"g{i}", "fake", 1) for i in range(2)), "test")


def _w(i: int, project: str = "a", cpu: float = 1, gpus: int = 0, at: float = 0.0) -> Waiting:
    return Waiting(f"j{i}", i, project, Resources(cpu, 0, gpus), at)


def test_fifo_within_a_project_and_no_overtaking() -> None:
    queued = [_w(1, cpu=3), _w(2, cpu=3), _w(3, cpu=1)]
    assert [p.id for p in place(queued, [], INV, now=0)] == ["j1"]  # j3 would fit but j2 is ahead of it


def test_fair_share_prefers_the_project_using_less() -> None:
    running = [Allocated("a", Resources(2, 0, 1), (0,))]
    queued = [_w(1, "a", gpus=1), _w(2, "b", gpus=1)]
    assert [(p.id, p.gpus) for p in place(queued, running, INV, now=0)] == [("j2", (1,))]


def test_other_projects_backfill_until_a_head_starves() -> None:
    running = [Allocated("a", Resources(1, 0, 2), (0, 1))]
    queued = [_w(1, "a", gpus=1, at=0.0), _w(2, "b", cpu=1, at=1.0)]
    assert [p.id for p in place(queued, running, INV, now=10, starvation_s=300)] == ["j2"]
    assert place(queued, running, INV, now=1000, starvation_s=300) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 4), st.integers(0, 2)), max_size=12),
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 2), st.integers(0, 1)), max_size=3),
)
def test_placements_never_overcommit_and_gpus_are_disjoint(
    jobs: list[tuple[str, int, int]], running_spec: list[tuple[str, int, int]]
) -> None:
    running: list[Allocated] = []
    free = [0, 1]
    cpu_used = 0
    for project, cpu, gpus in running_spec:
        if gpus > len(free) or cpu_used + cpu > INV.cpus:
            continue
        running.append(Allocated(project, Resources(cpu, 0, gpus), tuple(free[:gpus])))
        del free[:gpus]
        cpu_used += cpu
    queued = [_w(i, p, cpu, g) for i, (p, cpu, g) in enumerate(jobs)]
    placed = place(queued, running, INV, now=0)
    by_id = {w.id: w for w in queued}
    total_cpu = cpu_used + sum(by_id[p.id].resources.cpu for p in placed)
    assert total_cpu <= INV.cpus
    all_gpus = [g for a in running for g in a.gpus] + [g for p in placed for g in p.gpus]
    assert len(all_gpus) == len(set(all_gpus)) and set(all_gpus) <= {0, 1}
    for p in placed:
        assert len(p.gpus) == by_id[p.id].resources.gpus
    # FIFO inside each project: what starts of a project is a prefix of its queue.
    for project in "abc":
        mine = [w.id for w in queued if w.project == project]
        started = [p.id for p in placed if by_id[p.id].project == project]
        assert started == mine[: len(started)]


# --- Kubernetes ---------------------------------------------------------------------------------------


def test_render_kubernetes_job() -> None:
    spec = JobSpec.build(
        "kawa.ml.trainers:torch_mlp",
        cpu=2.5,
        mem="6G",
        gpu=1,
        params={"steps": 10},
        project="vision",
        timeout_s=600,
    )
    job = render_job(spec, image="registry.local/kawa:1", namespace="ml", job_id="j-1")
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["namespace"] == "ml"
    assert job["spec"]["activeDeadlineSeconds"] == 600 and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.local/kawa:1"
    assert container["command"] == ["python", "-m", "kawa.ml.jobs.runner", "kawa.ml.trainers:torch_mlp"]
    assert container["resources"]["requests"] == {"cpu": "2500m", "memory": "6Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["limits"] == {"cpu": "2500m", "memory": "6Gi", "nvidia.com/gpu": "1"}
    assert {"name": "KAWA_JOB_PARAMS", "value": '{"steps": 10}'} in container["env"]
    assert pod["restartPolicy"] == "Never"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    import yaml

    assert yaml.safe_load(render_yaml(spec)) == render_job(spec)


def test_render_command_job_without_gpu() -> None:
    job = render_job(JobSpec.build("python train.py --epochs 3", cpu=1))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "train.py", "--epochs", "3"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in job["spec"]["template"]["spec"]
