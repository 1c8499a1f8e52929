"""A project's rendered bucket policies on a real Ceph RGW: the gateway enforces what the permission map says."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from kawa.portal.permissions import Role
from kawa.projects.core import Project, s3_bucket
from kawa.projects.render import bucket_policy
from tests.fixtures.ceph import CephRgw

pytestmark = [pytest.mark.ceph, pytest.mark.xdist_group("ceph-rgw")]


def _denied(call: object, **kwargs: object) -> bool:
    try:
        call(**kwargs)  # type: ignore[operator]
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "AccessDenied"
    return False


def test_rendered_bucket_policies_are_enforced_by_the_gateway(ceph_rgw: CephRgw) -> None:
    import json

    tag = uuid.uuid4().hex[:6]
    viewer, engineer = f"vera-{tag}", f"dan-{tag}"
    team = Project(f"t{tag}", members={viewer: Role.VIEWER, engineer: Role.DATA_ENGINEER})
    owner = ceph_rgw.client()
    as_viewer, as_engineer = ceph_rgw.user(viewer).client(), ceph_rgw.user(engineer).client()
    phi, free = s3_bucket(team.name, "images"), s3_bucket(team.name, "anonymized")
    for bucket in (phi, free):
        owner.create_bucket(Bucket=bucket)
        owner.put_object(Bucket=bucket, Key="a.txt", Body=b"x")
    assert _denied(as_viewer.get_object, Bucket=free, Key="a.txt")  # nothing is open before the policy

    for bucket, short, phi_free in ((phi, "images", False), (free, "anonymized", True)):
        policy = bucket_policy(team, short, phi_free=phi_free)
        owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    # The viewer reads and lists the PHI-free bucket only, and writes nowhere.
    assert as_viewer.get_object(Bucket=free, Key="a.txt")["Body"].read() == b"x"
    assert [o["Key"] for o in as_viewer.list_objects_v2(Bucket=free)["Contents"]] == ["a.txt"]
    assert _denied(as_viewer.get_object, Bucket=phi, Key="a.txt")
    assert _denied(as_viewer.put_object, Bucket=free, Key="b.txt", Body=b"y")
    # The data engineer (phi.read, buckets.write) reads and writes both.
    as_engineer.put_object(Bucket=phi, Key="b.txt", Body=b"y")
    assert as_engineer.get_object(Bucket=phi, Key="b.txt")["Body"].read() == b"y"
    as_engineer.delete_object(Bucket=free, Key="a.txt")
    assert "Contents" not in owner.list_objects_v2(Bucket=free)
