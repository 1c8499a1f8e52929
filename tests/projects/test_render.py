"""Rendered backend policies of a project: Kubernetes namespace, quota and bindings; Kafka ACLs; S3 bucket policies."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from kawa.errors import ProjectError
from kawa.ml.jobs import JobSpec, render_job
from kawa.portal.permissions import Role
from kawa.projects.core import Project
from kawa.projects.render import bucket_policy, is_phi_free, kafka_users, kubernetes, quota_hard
from kawa.projects.templates import UNLIMITED, XRAY_PIPELINE, Quota

TEAM = Project("team-a", "xray-pipeline", members={"vera": Role.VIEWER, "dan": Role.DATA_ENGINEER,
                                                   "sam": Role.DATA_SCIENTIST, "ada": Role.ADMIN})  # fmt: skip


def test_namespace_quota_defaults_and_one_binding_per_member() -> None:
    manifests = kubernetes(TEAM, XRAY_PIPELINE.quota)
    kinds = [m["kind"] for m in manifests]
    assert kinds == ["Namespace", "ResourceQuota", "LimitRange", *["RoleBinding"] * 4]
    assert manifests[0]["metadata"]["name"] == "kawa-team-a"
    assert all(m["metadata"].get("namespace", "kawa-team-a") == "kawa-team-a" for m in manifests)
    assert manifests[1]["spec"]["hard"] == {
        "requests.cpu": "8", "requests.memory": "16384Mi", "requests.nvidia.com/gpu": "1", "pods": "2",
    }  # fmt: skip
    bindings = {m["subjects"][0]["name"]: m["roleRef"]["name"] for m in manifests if m["kind"] == "RoleBinding"}
    assert bindings == {"vera": "view", "dan": "edit", "sam": "edit", "ada": "admin"}


def test_no_limit_is_left_out_and_an_unlimited_project_gets_no_resource_quota() -> None:
    hard = quota_hard(Quota(cpus=None, gpus=2, memory_mb=None, concurrent_jobs=None))
    assert hard == {"requests.nvidia.com/gpu": "2"}
    assert "ResourceQuota" not in [m["kind"] for m in kubernetes(TEAM, UNLIMITED)]


def test_the_quota_counts_exactly_what_a_rendered_job_requests() -> None:
    """Every request a rendered Job makes is a resource the namespace's ResourceQuota counts, and back."""
    job = render_job(JobSpec.build("m:f", cpu=2, mem="1G", gpu=1, project="team-a"))
    requested = job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    hard = quota_hard(Quota(cpus=8, gpus=1, memory_mb=1024, concurrent_jobs=2))
    assert {f"requests.{k}" for k in requested} == set(hard) - {"pods"}
    assert job["spec"]["template"]["spec"].get("restartPolicy") == "Never"  # one pod a job: `pods` = jobs


def test_kafka_acls_follow_the_permission_map_and_are_real_kafka_acls() -> None:
    users = {u["metadata"]["annotations"]["kawa.dev/user"]: u for u in kafka_users(TEAM, ("xray-images.dlq",))}
    assert set(users) == {"vera", "dan", "sam", "ada"}

    def acls(user: str) -> list[dict[str, object]]:
        return users[user]["spec"]["authorization"]["acls"]  # type: ignore[no-any-return]

    assert acls("dan")[0]["operations"] == ["Create", "Describe", "Read", "Write"]  # topics.write
    assert acls("vera")[0]["operations"] == ["Describe", "Read"]
    assert acls("vera")[0]["resource"] == {"type": "topic", "name": "team-a.", "patternType": "prefix"}
    denied = [a for a in acls("vera") if a.get("type") == "deny"]
    assert [a["resource"]["name"] for a in denied] == ["team-a.xray-images.dlq"]  # type: ignore[index]
    assert not [a for a in acls("dan") if a.get("type") == "deny"]  # data engineers read PHI
    # Each ACL names a real Kafka resource type, pattern and operation (confluent-kafka's enums refuse others).
    for user, manifest in users.items():
        for acl in manifest["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            for operation in acl["operations"]:
                AclBinding(ResourceType[resource["type"].upper()], resource["name"],
                           ResourcePatternType["PREFIXED" if resource["patternType"] == "prefix" else "LITERAL"],
                           f"User:{user}", "*", AclOperation[operation.upper()],
                           AclPermissionType[acl.get("type", "allow").upper()])  # fmt: skip
    with pytest.raises(ProjectError, match="no topic prefix"):
        kafka_users(Project("default"))


def test_bucket_policies_give_phi_only_to_phi_readers_and_writes_to_bucket_writers() -> None:
    phi = bucket_policy(TEAM, "xray-images", phi_free=False)
    assert phi is not None
    read, write = phi["Statement"]
    assert read["Principal"]["AWS"] == ["arn:aws:iam:::user/ada", "arn:aws:iam:::user/dan"]  # phi.read only
    assert read["Resource"] == ["arn:aws:s3:::team-a--xray-images", "arn:aws:s3:::team-a--xray-images/*"]
    assert write["Principal"]["AWS"] == ["arn:aws:iam:::user/ada", "arn:aws:iam:::user/dan"]  # buckets.write
    assert write["Action"] == ["s3:PutObject", "s3:DeleteObject"]
    free = bucket_policy(TEAM, "xray-images-anonymized", phi_free=True)
    assert free is not None
    assert free["Statement"][0]["Principal"]["AWS"] == [f"arn:aws:iam:::user/{u}" for u in ("ada", "dan", "sam",
                                                                                            "vera")]  # fmt: skip
    assert bucket_policy(Project("empty-team"), "b", phi_free=True) is None
    assert is_phi_free("team-a", "xray-images-anonymized", ["team-a--xray-images-anonymized"])
    assert is_phi_free("team-a", "x", ["team-a/x"]) and not is_phi_free("team-a", "x", ["x-other"])
