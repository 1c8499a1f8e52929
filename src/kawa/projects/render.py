"""What a project is on each backend of the distributed shape, rendered from the one permission map.

Pure: a project (its members and their roles), its quota and its template's resources in; manifests and
policies out, for an operator to apply (``kawa projects render``). Nothing is applied here.

- **Kubernetes**: the project's namespace, a ``ResourceQuota`` with the quota the local scheduler enforces
  (requested CPUs, memory and GPUs, and ``pods`` for concurrent jobs: a rendered Job runs one pod), a
  ``LimitRange`` giving containers that request nothing a default request (a quota on requests refuses pods
  without one), and a ``RoleBinding`` per member to the built-in ``view``, ``edit`` or ``admin`` ClusterRole.
- **Kafka**: a Strimzi ``KafkaUser`` per member with ``simple`` authorization: ACLs on the project's topic
  prefix (``<project>.``) and consumer-group prefix. Dead-letter topics (``*.dlq``) carry raw payloads, so only
  roles with ``phi.read`` read them.
- **S3**: one bucket policy per bucket (AWS policy language, which Ceph RGW enforces): readers get
  ``s3:GetObject``/``s3:ListBucket`` — on a bucket that may hold PHI only roles with ``phi.read`` — and roles
  with ``buckets.write`` also put and delete.

The ``default`` project has no prefix (its topics and buckets keep their names), so prefix ACLs would cover the
whole cluster; its Kafka ACLs are left to the operator and :func:`kafka_users` refuses it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from kawa.errors import ProjectError
from kawa.portal.permissions import PERMISSIONS, Action, Role
from kawa.projects.core import DEFAULT_PROJECT, Project, k8s_namespace, kafka_topic, s3_bucket
from kawa.projects.templates import Quota

Manifest = dict[str, Any]
LABELS = {"app.kubernetes.io/managed-by": "kawa"}
DEFAULT_REQUEST = {"cpu": "1", "memory": "512Mi"}
"""What a container that requests nothing is given in a project's namespace (the LimitRange)."""

_CLUSTER_ROLE = {Role.VIEWER: "view", Role.ADMIN: "admin"}  # every other role works in the namespace: edit


def _may(role: Role, action: Action) -> bool:
    return action in PERMISSIONS[role]


def _labels(project: str) -> dict[str, str]:
    return {**LABELS, "kawa.dev/project": project}


# --- Kubernetes -------------------------------------------------------------------------------------------


def quota_hard(quota: Quota) -> dict[str, str]:
    """The ``ResourceQuota`` ``spec.hard`` for the job quota (limits set to ``None`` are left out)."""
    hard: dict[str, str] = {}
    if quota.cpus is not None:
        hard["requests.cpu"] = f"{quota.cpus:g}"
    if quota.memory_mb is not None:
        hard["requests.memory"] = f"{quota.memory_mb}Mi"
    if quota.gpus is not None:
        hard["requests.nvidia.com/gpu"] = str(quota.gpus)
    if quota.concurrent_jobs is not None:
        hard["pods"] = str(quota.concurrent_jobs)
    return hard


def kubernetes(project: Project, quota: Quota) -> list[Manifest]:
    """Namespace, ResourceQuota, LimitRange and one RoleBinding per member (in member-name order)."""
    ns = k8s_namespace(project.name)
    labels = _labels(project.name)

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": ns, "labels": labels}

    out: list[Manifest] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}]
    hard = quota_hard(quota)
    if hard:
        out.append({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("kawa-quota"),
                    "spec": {"hard": hard}})  # fmt: skip
    out.append({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": meta("kawa-defaults"),
        "spec": {"limits": [{"type": "Container", "defaultRequest": dict(DEFAULT_REQUEST),
                             "default": dict(DEFAULT_REQUEST)}]},
    })  # fmt: skip
    for user, role in sorted(project.members.items()):
        cluster_role = _CLUSTER_ROLE.get(role, "edit")
        out.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {**meta(f"kawa-{role.value}-{_dns(user)}"), "annotations": {"kawa.dev/role": role.value}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })  # fmt: skip
    return out


def _dns(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return cleaned[:40] or "user"


# --- Kafka ------------------------------------------------------------------------------------------------


def topic_operations(role: Role) -> list[str]:
    """What ``role`` may do on the project's topics (Kafka ACL operations)."""
    if _may(role, Action.TOPICS_WRITE):
        return ["Create", "Describe", "Read", "Write"]
    return ["Describe", "Read"]


def kafka_users(project: Project, dead_letter_topics: Collection[str] = ()) -> list[Manifest]:
    """A Strimzi ``KafkaUser`` (``kafka.strimzi.io/v1beta2``) per member: prefix ACLs on the project's topics and
    consumer groups; ``dead_letter_topics`` (short names) denied to roles without ``phi.read``."""
    if project.name == DEFAULT_PROJECT:
        raise ProjectError("project 'default' has no topic prefix; prefix ACLs would cover every topic. "
                           "Render a named project, or write the default project's ACLs by hand")  # fmt: skip
    prefix = kafka_topic(project.name, "")
    out: list[Manifest] = []
    for user, role in sorted(project.members.items()):
        acls: list[dict[str, Any]] = [
            {"resource": {"type": "topic", "name": prefix, "patternType": "prefix"},
             "operations": topic_operations(role), "host": "*"},
            {"resource": {"type": "group", "name": prefix, "patternType": "prefix"},
             "operations": ["Read", "Describe"], "host": "*"},
        ]  # fmt: skip
        if not _may(role, Action.PHI_READ):
            acls += [
                {"type": "deny", "resource": {"type": "topic", "name": kafka_topic(project.name, t),
                 "patternType": "literal"}, "operations": ["Read"], "host": "*"}
                for t in sorted(dead_letter_topics)
            ]  # fmt: skip
        out.append({
            "apiVersion": "kafka.strimzi.io/v1beta2",
            "kind": "KafkaUser",
            "metadata": {"name": f"{project.name}-{_dns(user)}", "labels": _labels(project.name),
                         "annotations": {"kawa.dev/user": user, "kawa.dev/role": role.value}},
            "spec": {"authorization": {"type": "simple", "acls": acls}},
        })  # fmt: skip
    return out


# --- S3 ---------------------------------------------------------------------------------------------------


def bucket_policy(
    project: Project, bucket: str, *, phi_free: bool, user_arn: str = "arn:aws:iam:::user/{}"
) -> Manifest | None:
    """The bucket policy of ``bucket`` (a short name) of ``project``: members who may read it get read, members
    with ``buckets.write`` also write; None when no member gets anything (the bucket stays its owner's).
    ``user_arn`` formats a member's principal (Ceph RGW: ``arn:aws:iam:::user/NAME``; AWS: IAM users or roles)."""
    name = s3_bucket(project.name, bucket)
    read_action = Action.VIEW if phi_free else Action.PHI_READ
    readers = sorted(u for u, r in project.members.items() if _may(r, read_action))
    writers = sorted(u for u, r in project.members.items() if _may(r, Action.BUCKETS_WRITE))
    statements: list[dict[str, Any]] = []
    if readers:
        statements.append({
            "Sid": "KawaRead",
            "Effect": "Allow",
            "Principal": {"AWS": [user_arn.format(u) for u in readers]},
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
        })  # fmt: skip
    if writers:
        statements.append({
            "Sid": "KawaWrite",
            "Effect": "Allow",
            "Principal": {"AWS": [user_arn.format(u) for u in writers]},
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": [f"arn:aws:s3:::{name}/*"],
        })  # fmt: skip
    return {"Version": "2012-10-17", "Statement": statements} if statements else None


def is_phi_free(project: str, bucket: str, phi_free_buckets: Collection[str]) -> bool:
    """Whether ``bucket`` of ``project`` is listed PHI-free (by its short, canonical or backend name)."""
    names = {bucket, f"{project}/{bucket}", s3_bucket(project, bucket)}
    return bool(names & set(phi_free_buckets))
