"""What the machine has for jobs: CPUs, memory, GPUs.

GPUs are found through NVML (``pynvml``, when importable) or, failing that, by parsing
``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits``. The configured
``ml.inventory`` overrides any discovered field — fake GPUs for tests, or a share of a host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidJobSpec

if TYPE_CHECKING:
    from kawa.config import InventoryConfig

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader,nounits",
]

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_MEM = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB]?)\s*$")


def parse_memory(text: str | int | None) -> int:
    """Bytes in ``"4G"``, ``"512Mi"``, ``"1.5GB"`` or ``1024``; ``None`` and ``""`` are 0."""
    if text is None or text == "":
        return 0
    if isinstance(text, int):
        return text
    match = _MEM.match(str(text))
    if match is None:
        raise InvalidJobSpec(f"invalid memory size {text!r}: write e.g. 512M, 4G or 1.5Gi")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_memory(n: int) -> str:
    """``4G``, ``1.5G``, ``512M``: whole units where exact, else GiB with one decimal."""
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
        if n >= 1024**3:
            return f"{n / 1024**3:.1f}G"
    return str(n)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int


@dataclass(frozen=True)
class Inventory:
    """The resources the scheduler may hand out. ``source`` says where the GPU list came from."""

    cpus: float
    memory_bytes: int
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)
    source: str = "discovered"

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def describe(self) -> str:
        gpus = ", ".join(f"{g.index}:{g.name}" for g in self.gpus) or "none"
        return f"{self.cpus:g} CPUs, {format_memory(self.memory_bytes)} memory, GPUs: {gpus} ({self.source})"


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from the CSV that :data:`NVIDIA_SMI_QUERY` prints (``index, uuid, name, memory.total``)."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            raise ValueError(f"unexpected nvidia-smi line {line!r}")
        # A GPU name could contain a comma; index and uuid are first, memory last.
        index, uuid, memory = parts[0], parts[1], parts[-1]
        name = ", ".join(parts[2:-1])
        try:
            memory_mib = int(float(memory))
        except ValueError:
            memory_mib = 0  # "[N/A]" on some MIG or vGPU setups
        gpus.append(Gpu(int(index), uuid, name, memory_mib))
    return gpus


def gpus_from_nvml(nvml: Any) -> list[Gpu]:
    """GPUs through an NVML binding module (``pynvml`` / ``nvidia-ml-py``); ``nvml`` is injected for tests."""
    nvml.nvmlInit()
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                Gpu(
                    i,
                    uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(memory.total) // (1024 * 1024),
                )
            )
        return gpus
    finally:
        nvml.nvmlShutdown()


def discover_gpus(nvml: Any = None, run: Any = subprocess.run) -> tuple[list[Gpu], str]:
    """GPUs found and how: ``"nvml"``, ``"nvidia-smi"`` or ``"none"``."""
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError:
            nvml = None
    if nvml is not None:
        try:
            return gpus_from_nvml(nvml), "nvml"
        except Exception:  # NVML present but no driver: fall through to nvidia-smi
            pass
    if shutil.which(NVIDIA_SMI_QUERY[0]) is None and run is subprocess.run:
        return [], "none"
    try:
        done = run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return [], "none"
    if done.returncode != 0:
        return [], "none"
    return parse_nvidia_smi(done.stdout), "nvidia-smi"


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _cpu_count() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:
        return float(os.cpu_count() or 1)


def build_inventory(override: InventoryConfig | None = None, *, nvml: Any = None) -> Inventory:
    """The machine's inventory with the configured overrides applied."""
    cpus = override.cpus if override and override.cpus is not None else _cpu_count()
    memory = parse_memory(override.memory) if override and override.memory else _total_memory()
    if override is not None and override.gpus is not None:
        fake = tuple(
            Gpu(i, f"GPU-fake-{i:04d}", override.gpu_name, override.gpu_memory_mib) for i in range(override.gpus)
        )
        return Inventory(cpus, memory, fake, source="configured ml.inventory")
    gpus, source = discover_gpus(nvml)
    return Inventory(cpus, memory, tuple(gpus), source=source)
