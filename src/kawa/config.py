"""Configuration, read in exactly one place.

Sources, later wins: defaults, ``kawa.yaml`` (``--config``, ``KAWA_CONFIG`` or ``./kawa.yaml``), then
``KAWA_*`` environment variables. Nested fields use a double underscore (``KAWA_LOG__URI``); a few shortcuts
exist for the common ones (``KAWA_HOME``, ``KAWA_LOG``, ``KAWA_STORE``). The result is a frozen model: code
receives it, never reads the environment itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from kawa.errors import ConfigError

MiB = 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaClientConfig(_Frozen):
    """Settings passed to every Kafka client (admin, producer, consumer)."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    session_timeout_ms: int = 10_000
    extra: dict[str, str] = Field(default_factory=dict, description="raw librdkafka settings")

    def librdkafka(self) -> dict[str, Any]:
        """The settings as librdkafka configuration keys."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        if self.ssl_certificate_location:
            conf["ssl.certificate.location"] = self.ssl_certificate_location
        if self.ssl_key_location:
            conf["ssl.key.location"] = self.ssl_key_location
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(self.extra)
        return conf


class LogConfig(_Frozen):
    """The event log. ``uri``: ``embedded:`` (under the Kawa home), a directory path, or ``kafka://h:p[,h:p]``."""

    uri: str = "embedded:"
    fsync: Literal["never", "batch", "always"] = Field(
        "never",
        description=(
            "embedded log durability: 'never' = written to the OS on acknowledgement (survives a process "
            "crash, not a power loss); 'batch' = fsync once per produced batch; 'always' = fsync per record"
        ),
    )
    segment_bytes: int = Field(64 * MiB, gt=0)
    max_record_bytes: int = Field(1 * MiB, gt=0)
    kafka: KafkaClientConfig = Field(default_factory=KafkaClientConfig)


class StoreNotifyConfig(_Frozen):
    """How bucket notifications reach the event log (see docs/store.md)."""

    mode: Literal["auto", "rgw", "sqs", "poll"] = Field(
        "auto",
        description=(
            "S3 backend: 'rgw' = Ceph RGW pushes to Kafka itself (SNS topic with push-endpoint); 'sqs' = the "
            "server sends to an SQS queue that a Kawa bridge drains (AWS, moto); 'poll' = Kawa lists the "
            "bucket periodically; 'auto' = sqs if the endpoint speaks SQS, else rgw if it speaks SNS, else poll"
        ),
    )
    queue_name: str = "kawa-notifications"
    kafka_endpoint: str | None = Field(
        None, description="rgw mode: push-endpoint for the RGW topic (default: from a kafka:// log URI)"
    )
    ingress_url: str | None = Field(
        None, description="rgw mode: push over HTTP to the Kawa notification ingress at this URL (kawa ingress), "
        "for RGW builds without the Kafka endpoint (Debian's); the topic's push-endpoint is <url>/rgw/<topic>",
    )
    poll_interval_s: float = Field(5.0, gt=0)
    sqs_wait_s: int = Field(1, ge=0, le=20)
    settle_s: float = Field(
        1.0, ge=0, description="local watcher: a file counts as complete after this long without change"
    )
    rescan_interval_s: float = Field(60.0, gt=0)
    publish_timeout_s: float = Field(
        10.0, gt=0, description="how long a write waits for the log to take its notification before the notification "
        "waits in the outbox (the write itself is kept either way)",
    )


class StoreConfig(_Frozen):
    """The object store. ``uri``: ``file:`` (under the Kawa home), a directory path, or ``s3://[bucket-prefix]``."""

    uri: str = "file:"
    endpoint_url: str | None = None
    region: str = "us-east-1"
    path_style: bool = True
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    max_attempts: int = Field(3, ge=1)
    connect_timeout_s: float = Field(2.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)
    multipart_chunk_bytes: int = Field(8 * MiB, ge=5 * MiB)
    fsync: bool = Field(True, description="local backend: fsync object data before it becomes visible")
    quota_refresh_s: float = Field(60.0, gt=0, description="how often a process re-measures a project's bytes "
                                   "for its storage_bytes quota (it also does before any refusal)")
    notify: StoreNotifyConfig = Field(default_factory=StoreNotifyConfig)


class OidcConfig(_Frozen):
    """Single sign-on with an OpenID Connect provider (see "Single sign-on" in docs/portal.md)."""

    issuer: str = Field(description="the provider's issuer URL; its /.well-known/openid-configuration is read")
    client_id: str
    client_secret: SecretStr | None = Field(None, description="confidential clients; public clients use PKCE only")
    audience: str | None = Field(None, description="the `aud` API bearer JWTs must carry; default: client_id")
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    groups_claim: str = Field("groups", description="the claim holding the user's IdP groups")
    group_roles: dict[str, str] = Field(
        default_factory=dict,
        description="IdP group -> role ('data-scientist') or 'project:role' ('default:admin')",
    )
    leeway_s: int = Field(30, ge=0, description="clock skew allowed when checking exp and nbf")


class PortalConfig(_Frozen):
    """The portal (web UI, JSON API, /metrics) that ``kawa up`` serves; see docs/portal.md."""

    enabled: bool = Field(True, description="serve the portal inside `kawa up`")
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    secret_key: SecretStr | None = Field(
        None, description="signs CSRF tokens; default: a random key kept in <home>/portal/secret.key"
    )
    users_db: Path | None = Field(None, description="users, tokens and sessions; default <home>/portal/users.db")
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure flag on cookies: 'auto' = when the request came over https"
    )
    session_ttl_s: int = Field(8 * 3600, gt=0)
    sample_interval_s: float = Field(1.0, gt=0, description="how often live views and rates are refreshed")
    phi_free_buckets: tuple[str, ...] = Field(
        (), description="buckets whose objects carry no PHI: any role may view them; all others need phi.read"
    )
    metrics_auth: bool = Field(True, description="require a token (portal.view) for /metrics")
    oidc: OidcConfig | None = Field(None, description="single sign-on; absent: local users only")


class InventoryConfig(_Frozen):
    """Override what the job scheduler believes the machine has (tests, or to reserve part of a host).

    Unset fields are discovered (CPU count, memory, GPUs through NVML or ``nvidia-smi``).
    """

    cpus: float | None = Field(None, gt=0)
    memory: str | None = Field(None, description="e.g. '16G', '512M' or a byte count")
    gpus: int | None = Field(None, ge=0, description="number of (fake) GPUs, indexes 0..n-1")
    gpu_name: str = "fake-gpu"
    gpu_memory_mib: int = Field(16_384, gt=0)


class MLConfig(_Frozen):
    """Model lifecycle: tracking + registry (MLflow), the local job scheduler, model serving."""

    tracking: bool = Field(True, description="track job runs in MLflow; 'off' runs jobs without MLflow")
    tracking_uri: str | None = Field(None, description="default: sqlite:///<home>/mlflow.db")
    registry_uri: str | None = Field(None, description="default: the tracking URI")
    artifact_root: str | None = Field(None, description="default: <home>/mlartifacts (embedded tracking)")
    experiment: str = "kawa"
    inventory: InventoryConfig = Field(default_factory=InventoryConfig)
    scheduler: bool = Field(True, description="run the local job scheduler inside `kawa up`")
    scheduler_tick_s: float = Field(0.2, gt=0)
    kill_grace_s: float = Field(5.0, ge=0)
    models_topic: str = "kawa.models"
    predictions_topic: str = "predictions"


class FunctionsConfig(_Frozen):
    """Function hosting: which apps ``kawa up`` runs and where finished events are remembered."""

    apps: list[str] = Field(default_factory=list, description="module:app references that `kawa up` hosts")
    dedupe: str = Field(
        "sqlite:",
        description="dedupe store: 'sqlite:' (under the home) or sqlite:PATH, 'memory:', 'none:' (docs/functions.md)",
    )
    replicas: Literal["auto", "process", "thread"] = Field(
        "auto", description="replicas of every hosted function: 'process', 'thread' or 'auto' (each function decides)"
    )


class LoopConfig(_Frozen):
    """The retraining loop: one policy per model (validated by :class:`kawa.retrain.policy.LoopPolicy`)."""

    policies: list[dict[str, Any]] = Field(default_factory=list, description="see docs/loop.md")
    monitors: list[dict[str, Any]] = Field(
        default_factory=list,
        description="`kawa up`: one monitoring service per entry (kawa.monitor.service.MonitorConfig fields; "
        "`join` as {horizon, by, grace}); its alerts reach the loops",
    )
    interval_s: float = Field(5.0, gt=0, description="`kawa up`: seconds between steps of each loop and evaluator")
    evaluate: bool = Field(True, description="`kawa up`: evaluate every running experiment (kawa.evaluations)")


class KawaConfig(_Frozen):
    """The whole configuration."""

    home: Path = Path(".kawa")
    log: LogConfig = Field(default_factory=LogConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    portal: PortalConfig = Field(default_factory=PortalConfig)
    functions: FunctionsConfig = Field(default_factory=FunctionsConfig)
    ml: MLConfig = Field(default_factory=MLConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    apps: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="apps `kawa up` starts: name -> the app's settings (its own model validates them; "
        "`plugin: pkg.module:plugin` names an app installed without an entry point)",
    )

    def path(self, *parts: str) -> Path:
        """A path under the Kawa home."""
        return self.home.joinpath(*parts)


_SHORTCUTS = {"KAWA_HOME": ("home",), "KAWA_LOG": ("log", "uri"), "KAWA_STORE": ("store", "uri")}
_NOT_SETTINGS = {"KAWA_CONFIG"}


def _set_nested(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part} is not a section")
        target = node
    target[path[-1]] = value


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("KAWA_") or name in _NOT_SETTINGS or name.startswith("KAWA_TEST_"):
            continue
        if name in _SHORTCUTS:
            _set_nested(out, _SHORTCUTS[name], value)
        elif "__" in name:
            path = tuple(p.lower() for p in name[len("KAWA_") :].split("__") if p)
            if path:
                _set_nested(out, path, value)
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def find_config_file(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing file to --config")
        return path
    if env.get("KAWA_CONFIG"):
        path = Path(env["KAWA_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"KAWA_CONFIG points to {path}, which does not exist")
        return path
    local = Path("kawa.yaml")
    return local if local.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> KawaConfig:
    """Read ``kawa.yaml`` and ``KAWA_*`` variables into a :class:`KawaConfig`.

    ``overrides`` are nested dicts applied last (the CLI's ``--log`` and ``--home`` flags).
    """
    environ = os.environ if env is None else env
    data: dict[str, Any] = {}
    file = find_config_file(path, environ)
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file} must hold a mapping at the top level")
        data = loaded
    data = _merge(data, _env_overrides(environ))
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        config = KawaConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {file}" if file else ""
        raise ConfigError(f"invalid configuration{where}:\n{exc}") from exc
    if file is not None and not config.home.is_absolute() and "home" in data:
        # A relative home in a config file is relative to that file, as users expect.
        config = config.model_copy(update={"home": (file.parent / config.home)})
    return config


@dataclass(frozen=True)
class JobEnvironment:
    """What the job scheduler hands a job's process through its environment (``KAWA_JOB_*``); all empty
    outside a job. Read here, the one module that reads the environment."""

    job_id: str | None
    job_dir: str | None
    params_json: str | None
    project: str | None
    code_version: str | None
    cuda_visible_devices: str | None


def job_environment(env: Mapping[str, str] | None = None) -> JobEnvironment:
    """The ``KAWA_JOB_*`` variables of this process (or of ``env``)."""
    environ = os.environ if env is None else env
    return JobEnvironment(
        job_id=environ.get("KAWA_JOB_ID") or None,
        job_dir=environ.get("KAWA_JOB_DIR") or None,
        params_json=environ.get("KAWA_JOB_PARAMS") or None,
        project=environ.get("KAWA_JOB_PROJECT") or None,
        code_version=environ.get("KAWA_CODE_VERSION") or None,
        cuda_visible_devices=environ.get("CUDA_VISIBLE_DEVICES"),
    )


def inherited_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process (a job) to start from."""
    return dict(os.environ)


@dataclass(frozen=True)
class ShellEnvironment:
    """What the ``kawa`` command line reads from the shell: ``KAWA_PROJECT`` (the current project, over
    ``kawa use``) and ``KAWA_USER`` (else ``USER`` or ``LOGNAME``): the name audit records carry unless ``--user``
    says otherwise. ``KAWA_USER`` also names who the store and log commands act as
    (:func:`kawa.projects.scoped.cli_scope`)."""

    project: str | None
    user: str | None


def shell_environment(env: Mapping[str, str] | None = None) -> ShellEnvironment:
    environ = os.environ if env is None else env
    return ShellEnvironment(
        project=environ.get("KAWA_PROJECT") or None,
        user=environ.get("KAWA_USER") or environ.get("USER") or environ.get("LOGNAME") or None,
    )
