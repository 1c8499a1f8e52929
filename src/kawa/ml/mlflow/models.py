"""The registry's MLflow half: registered models, versions, aliases, tags and model files.

Every call goes through :func:`~kawa.ml.mlflow.errors.mlflow_errors`, so callers see Kawa errors only
(``ModelNotFound`` with what to do, ``TrackingUnavailable`` when the server is down, else ``ModelError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from kawa.errors import ModelError, ModelNotFound
from kawa.ml.mlflow.client import client
from kawa.ml.mlflow.errors import error_class, mlflow_errors
from kawa.ml.refs import tracking_uri
from kawa.ml.runs import TAG_PARENT, provenance_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from kawa.config import KawaConfig

DEFAULT_PARENT_ALIAS = "champion"


@dataclass(frozen=True)
class ModelRecord:
    name: str
    latest_version: int | None
    aliases: dict[str, int]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: int
    run_id: str | None
    created_ms: int
    tags: dict[str, str] = field(default_factory=dict)


def _no_model(name: str) -> str:
    return f"no registered model {name!r}; `kawa models list` shows the registered ones"


def _no_version(name: str, version: int) -> str:
    return f"model {name!r} has no version {version}; `kawa models versions {name}` lists them"


class MlflowModels:
    """Registered models in the MLflow registry of one configuration (client opened on first use)."""

    def __init__(self, config: KawaConfig) -> None:
        self.config = config
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client(self.config)
        return self._client

    def register(
        self,
        model_uri: str,
        name: str,
        *,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        parent_version: int | None = None,
    ) -> int:
        """Register ``model_uri`` (``models:/m-…``, ``runs:/…``, a path) as a new version of ``name``, with
        the provenance ``tags`` and its parent (default: the version ``champion`` points to now, if any)."""
        from mlflow.exceptions import MlflowException

        mlf = self.client
        with mlflow_errors(f"could not register {model_uri} as {name!r}"):
            try:
                existing = mlf.get_registered_model(name)
            except MlflowException as exc:
                if error_class(exc.error_code) is not ModelNotFound:
                    raise
                existing = mlf.create_registered_model(name)
            if parent_version is None:
                target = (existing.aliases or {}).get(DEFAULT_PARENT_ALIAS)
                parent_version = int(target) if target is not None else None
            # MLflow 3 logged models ("models:/m-…") are registered by id; a server checks the source is its.
            model_id = model_uri[len("models:/") :] if model_uri.startswith("models:/m-") else None
            version = mlf.create_model_version(name, model_uri, run_id=run_id, model_id=model_id)
            extra = {TAG_PARENT: str(parent_version)} if parent_version is not None else {}
            for key, value in {**provenance_tags(tags or {}), **extra}.items():
                mlf.set_model_version_tag(name, version.version, key, value)
        return int(version.version)

    def models(self) -> list[ModelRecord]:
        with mlflow_errors("listing registered models"):
            found = self.client.search_registered_models(max_results=1000)
        out = []
        for m in found:
            latest = max((int(v.version) for v in m.latest_versions or []), default=None)
            aliases = {a: int(v) for a, v in (m.aliases or {}).items()}
            out.append(ModelRecord(m.name, latest, aliases, dict(m.tags or {})))
        return sorted(out, key=lambda m: m.name)

    def model(self, name: str) -> ModelRecord:
        with mlflow_errors(f"registry error for {name!r}", not_found=_no_model(name)):
            m = self.client.get_registered_model(name)
        latest = max((int(v.version) for v in m.latest_versions or []), default=None)
        return ModelRecord(m.name, latest, {a: int(v) for a, v in (m.aliases or {}).items()}, dict(m.tags or {}))

    def versions(self, name: str) -> list[VersionRecord]:
        with mlflow_errors(f"listing the versions of {name!r}", not_found=_no_model(name)):
            found = self.client.search_model_versions(f"name = '{name}'", max_results=1000)
        return [self._record(v) for v in found]

    def version(self, name: str, version: int) -> VersionRecord:
        self.model(name)  # "no such model" before "no such version"
        with mlflow_errors(f"reading {name}/{version}", not_found=_no_version(name, version)):
            return self._record(self.client.get_model_version(name, str(version)))

    @staticmethod
    def _record(v: Any) -> VersionRecord:
        return VersionRecord(
            v.name, int(v.version), v.run_id or None, int(v.creation_timestamp or 0), dict(v.tags or {})
        )

    def run(self, run_id: str) -> tuple[dict[str, float], dict[str, str]] | None:
        """The metrics and tags of run ``run_id``; None when it was deleted."""
        try:
            with mlflow_errors(f"reading run {run_id}"):
                run = self.client.get_run(run_id)
        except ModelNotFound:
            return None
        return dict(run.data.metrics), dict(run.data.tags)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        with mlflow_errors(f"moving {name}@{alias} to {version}", not_found=_no_version(name, version)):
            self.client.set_registered_model_alias(name, alias, str(version))

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        with mlflow_errors(f"tagging {name!r}", not_found=_no_model(name)):
            self.client.set_registered_model_tag(name, key, value)

    def local_path(self, name: str, version: int) -> Path:
        """A local directory holding the version's model files (downloaded into the home when remote)."""
        with mlflow_errors(f"locating {name}/{version}", not_found=_no_version(name, version)):
            uri = self.client.get_model_version_download_uri(name, str(version))
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        cache = Path(self.config.home).absolute() / "models-cache" / name / str(version)
        marker = cache / ".complete"
        if marker.exists():
            return Path(marker.read_text())
        import mlflow.artifacts

        cache.mkdir(parents=True, exist_ok=True)
        try:
            with mlflow_errors(f"downloading {name}/{version}"):
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(cache), tracking_uri=tracking_uri(self.config)
                )
        except ModelError as exc:
            raise ModelError(f"could not download {name}/{version} from {uri}: {exc}") from exc
        except Exception as exc:  # the artifact store's own errors (S3, HTTP)
            raise ModelError(f"could not download {name}/{version} from {uri}: {exc}") from exc
        marker.write_text(str(local))
        return Path(local)
