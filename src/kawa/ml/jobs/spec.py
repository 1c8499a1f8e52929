"""What a job is: an entry point, parameters, a project and a resource request."""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from kawa.errors import InvalidJobSpec
from kawa.ml.resources import Inventory, format_memory, parse_memory

_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class JobState(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})
ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING})


@dataclass(frozen=True)
class Resources:
    """A request: CPUs (fractions allowed), memory in bytes, whole GPUs."""

    cpu: float = 1.0
    memory_bytes: int = 0
    gpus: int = 0

    def __post_init__(self) -> None:
        if self.cpu <= 0 or math.isnan(self.cpu):
            raise InvalidJobSpec(f"--cpu must be positive, got {self.cpu}")
        if self.memory_bytes < 0:
            raise InvalidJobSpec("--mem must not be negative")
        if self.gpus < 0:
            raise InvalidJobSpec(f"--gpu must be 0 or more, got {self.gpus}")

    def describe(self) -> str:
        mem = format_memory(self.memory_bytes) if self.memory_bytes else "-"
        return f"cpu={self.cpu:g} mem={mem} gpu={self.gpus}"

    def never_fits(self, inventory: Inventory) -> str | None:
        """Why this request can never be met on ``inventory`` (None when it can)."""
        if self.gpus > inventory.gpu_count:
            found = "none found through NVML or nvidia-smi" if inventory.source == "none" else inventory.source
            return (
                f"requested {self.gpus} GPU(s) but this machine has {inventory.gpu_count} ({found}); "
                "it will not run on the CPU instead. Submit it where GPUs are (configure ml.inventory for "
                "this host, or render it for a cluster with `kawa jobs render ... --gpu N`), or submit "
                "without --gpu"
            )
        if self.cpu > inventory.cpus:
            return (
                f"requested {self.cpu:g} CPUs but this machine has {inventory.cpus:g}; ask for fewer with "
                "--cpu or configure ml.inventory.cpus"
            )
        if inventory.memory_bytes and self.memory_bytes > inventory.memory_bytes:
            return (
                f"requested {format_memory(self.memory_bytes)} memory but this machine has "
                f"{format_memory(inventory.memory_bytes)}; ask for less with --mem"
            )
        return None


def coerce_param(value: str) -> Any:
    """``"3"`` → 3, ``"0.1"`` → 0.1, ``"true"`` → True, ``'[1,2]'`` → [1, 2]; anything else stays a string."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InvalidJobSpec(f"--param {item!r} must look like NAME=VALUE with NAME a Python identifier")
        params[key] = coerce_param(value)
    return params


@dataclass(frozen=True)
class JobSpec:
    """A job to run. ``entrypoint`` is ``module:function`` (called with ``**params``) or a shell-style command
    (run as is; params reach it as ``KAWA_JOB_PARAMS`` JSON)."""

    entrypoint: str
    resources: Resources = field(default_factory=Resources)
    params: dict[str, Any] = field(default_factory=dict)
    project: str = "default"
    timeout_s: float | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.entrypoint.strip():
            raise InvalidJobSpec("the job needs an entry point: module:function or a command")
        if not _PROJECT.match(self.project):
            raise InvalidJobSpec(f"invalid project {self.project!r}: use 1-63 letters, digits, '.', '_' or '-'")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidJobSpec("--timeout must be positive (seconds)")
        try:
            json.dumps(self.params)
        except TypeError as exc:
            raise InvalidJobSpec(f"job params must be JSON values: {exc}") from exc

    @property
    def is_function(self) -> bool:
        return bool(_FUNCTION.match(self.entrypoint.strip()))

    def command(self, python: str | None = None) -> list[str]:
        """The argv that runs this job locally."""
        if self.is_function:
            return [python or sys.executable, "-m", "kawa.ml.jobs.runner", self.entrypoint.strip()]
        argv = shlex.split(self.entrypoint)
        if not argv:
            raise InvalidJobSpec(f"cannot parse the command {self.entrypoint!r}")
        return argv

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        data["resources"] = Resources(**data.get("resources", {}))
        return cls(**data)

    @classmethod
    def build(
        cls,
        entrypoint: str,
        *,
        cpu: float = 1.0,
        mem: str | int | None = None,
        gpu: int = 0,
        params: dict[str, Any] | None = None,
        project: str = "default",
        timeout_s: float | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> JobSpec:
        return cls(
            entrypoint,
            Resources(cpu, parse_memory(mem), gpu),
            dict(params or {}),
            project,
            timeout_s,
            cwd,
            dict(env or {}),
            name,
        )
