"""Helpers shared by the model lifecycle tests."""

from __future__ import annotations

from typing import Any

from kawa.config import KawaConfig
from tests.waiting import wait_for

__all__ = ["make_config", "register_versions", "wait_for"]


def make_config(base: KawaConfig, **ml: Any) -> KawaConfig:
    """``base`` with some ``ml`` settings replaced (inventory given as a dict)."""
    if "inventory" in ml and isinstance(ml["inventory"], dict):
        ml["inventory"] = base.ml.inventory.model_copy(update=ml["inventory"])
    return base.model_copy(update={"ml": base.ml.model_copy(update=ml)})


def register_versions(name: str, count: int, flavor: str = "sklearn") -> list[int]:
    """Train ``count`` small logistic regressions (different seeds) and register them as versions of ``name``."""
    from kawa.ml.trainers import logistic_regression

    versions = []
    for seed in range(count):
        result = logistic_regression(name, n=200, seed=seed, flavor=flavor)
        versions.append(int(result["version"]))
    return versions
