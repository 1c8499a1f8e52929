"""Creating a project's template resources: its buckets and topics, under their backend names.

``provision(backends, project, template)`` creates what is missing and leaves what exists, so it can run again
(``kawa projects provision``) after a backend was down when the project was created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kawa.errors import TopicNotFound
from kawa.projects.templates import Resource, get_template, resources

if TYPE_CHECKING:
    from kawa.backends import Backends

__all__ = ["Provisioned", "provision"]


@dataclass(frozen=True)
class Provisioned:
    resource: Resource
    created: bool  # False: it existed already


def provision(backends: Backends, project: str, template: str) -> list[Provisioned]:
    """Create the buckets and topics ``template`` gives ``project`` that do not exist yet."""
    from kawa.log.base import TopicSpec

    out: list[Provisioned] = []
    for resource in resources(get_template(template), project):
        name = resource.backend_name
        if resource.kind == "bucket":
            existed = backends.store.bucket_exists(name)
            backends.store.create_bucket(name, exist_ok=True)
        else:
            try:
                backends.log.describe_topic(name)
                existed = True
            except TopicNotFound:
                backends.log.create_topic(TopicSpec(name), exist_ok=True)
                existed = False
        out.append(Provisioned(resource, not existed))
    return out
