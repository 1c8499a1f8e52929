"""Model references: ``name@alias`` or ``name/version``, and where MLflow lives for a configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kawa.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from kawa.config import KawaConfig

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REF = re.compile(rf"^(?P<name>{_NAME})(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))$")


@dataclass(frozen=True)
class ModelRef:
    """A registered model and either an alias (follows moves) or a fixed version."""

    name: str
    alias: str | None = None
    version: int | None = None

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias is not None else f"{self.name}/{self.version}"


def parse_ref(ref: str) -> ModelRef:
    """Parse ``"name@alias"`` or ``"name/version"``."""
    match = _REF.match(ref.strip())
    if match is None:
        raise ModelError(
            f"invalid model reference {ref!r}: write NAME@ALIAS (e.g. 'pneumonia@champion') or "
            "NAME/VERSION (e.g. 'pneumonia/3')"
        )
    version = match.group("version")
    return ModelRef(match.group("name"), match.group("alias"), int(version) if version else None)


def tracking_uri(config: KawaConfig) -> str:
    """The MLflow tracking URI: configured, else ``sqlite:///<home>/mlflow.db``."""
    if config.ml.tracking_uri:
        return config.ml.tracking_uri
    home = Path(config.home).absolute()
    return f"sqlite:///{home / 'mlflow.db'}"


def registry_uri(config: KawaConfig) -> str:
    return config.ml.registry_uri or tracking_uri(config)


def artifact_root(config: KawaConfig) -> str | None:
    """Where new experiments keep artifacts; None for a remote server (it decides, e.g. proxied artifacts)."""
    if config.ml.artifact_root:
        return config.ml.artifact_root
    uri = tracking_uri(config)
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (Path(config.home).absolute() / "mlartifacts").as_uri()


def require_tracking(config: KawaConfig) -> None:
    if not config.ml.tracking:
        raise ConfigError(
            "MLflow tracking is switched off (ml.tracking: off / KAWA_ML__TRACKING=off); switch it on to use "
            "the model registry"
        )
