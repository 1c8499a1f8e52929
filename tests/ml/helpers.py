"""Helpers shared by the model lifecycle tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kawa.config import KawaConfig

T = TypeVar("T")


def make_config(base: KawaConfig, **ml: Any) -> KawaConfig:
    """``base`` with some ``ml`` settings replaced (inventory given as a dict)."""
    if "inventory" in ml and isinstance(ml["inventory"], dict):
        ml["inventory"] = base.ml.inventory.model_copy(update=ml["inventory"])
    return base.model_copy(update={"ml": base.ml.model_copy(update=ml)})


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def register_versions(name: str, count: int, flavor: str = "sklearn") -> list[int]:
    """Train ``count`` small logistic regressions (different seeds) and register them as versions of ``name``."""
    from kawa.ml.trainers import logistic_regression

    versions = []
    for seed in range(count):
        result = logistic_regression(name, n=200, seed=seed, flavor=flavor)
        versions.append(int(result["version"]))
    return versions
