"""Project templates: the buckets, topics, quota and starter app a new project begins with.

Pure: a template names its resources by their short names; :func:`resources` gives each one's canonical name
(``project/name``) and its backend name (:func:`~kawa.projects.core.s3_bucket`,
:func:`~kawa.projects.core.kafka_topic`). Nothing is created here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

from kawa.errors import InvalidQuota, UnknownTemplate
from kawa.projects.core import canonical, kafka_topic, s3_bucket

GiB = 1024**3


@dataclass(frozen=True)
class Quota:
    """What a project may use at once; ``None`` is no limit.

    The job scheduler enforces ``cpus``, ``gpus``, ``memory_mb`` and ``concurrent_jobs`` (a job over them is refused at
    submit, or waits until the project's running jobs leave room). Each function host
    keeps a project's functions within ``function_replicas`` (:mod:`kawa.functions.quota`), and every store Kawa
    opens its buckets within ``storage_bytes`` (:mod:`kawa.store.quota`); see docs/projects.md.
    """

    cpus: float | None = 4.0
    gpus: int | None = 0
    memory_mb: int | None = 8192
    concurrent_jobs: int | None = 2
    storage_bytes: int | None = 10 * GiB
    function_replicas: int | None = 4

    def data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Quota:
        """A quota from stored or typed fields (``None`` or ``"none"``: no limit); unknown fields and negative
        values are refused."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidQuota(f"unknown quota field(s) {', '.join(unknown)}; use: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
                values[name] = None
                continue
            try:
                number = float(value) if name == "cpus" else int(value)
            except (TypeError, ValueError) as exc:
                raise InvalidQuota(f"quota {name} must be a number or 'none', got {value!r}") from exc
            if number < 0:
                raise InvalidQuota(f"quota {name} must be zero or more, got {value!r}")
            values[name] = number
        return cls(**values)


UNLIMITED = Quota(None, None, None, None, None, None)
"""The ``default`` project's quota until an admin sets one: today's single-user use is not limited."""


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    buckets: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    quota: Quota = Quota()
    starter_app: str | None = None  # the app `kawa up` would start for it (an entry point name)
    phi_free: tuple[str, ...] = ()  # buckets whose objects carry no PHI (all others may)


EMPTY = Template("empty", "no resources; the default quota")
XRAY_PIPELINE = Template(
    "xray-pipeline",
    "the X-ray pneumonia pipeline's buckets and topics (docs/xray.md), with a GPU for training",
    buckets=("xray-images", "xray-images-processed", "xray-images-anonymized"),
    topics=("xray-images", "xray-results", "xray-images.dlq", "xray-deid.dlq"),
    quota=Quota(cpus=8.0, gpus=1, memory_mb=16384, concurrent_jobs=2, storage_bytes=50 * GiB, function_replicas=8),
    starter_app="xray",
    phi_free=("xray-images-processed", "xray-images-anonymized"),
)
TEMPLATES: dict[str, Template] = {t.name: t for t in (EMPTY, XRAY_PIPELINE)}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UnknownTemplate(f"unknown template {name!r}; use one of: {', '.join(TEMPLATES)}") from None


class Resource(NamedTuple):
    kind: str  # "bucket" or "topic"
    canonical: str  # project/name
    backend_name: str  # the S3 bucket or Kafka topic it maps onto


def resources(template: Template, project: str) -> list[Resource]:
    """The template's resources in ``project``: buckets first, then topics, each in the template's order."""
    out = [Resource("bucket", canonical(project, b), s3_bucket(project, b)) for b in template.buckets]
    out += [Resource("topic", canonical(project, t), kafka_topic(project, t)) for t in template.topics]
    return out
