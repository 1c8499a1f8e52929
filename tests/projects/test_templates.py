"""Project templates: their resources, mapped onto backend names by the core's one mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kawa.errors import InvalidQuota, UnknownTemplate
from kawa.projects.core import DEFAULT_PROJECT, kafka_topic, s3_bucket, split
from kawa.projects.templates import EMPTY, TEMPLATES, XRAY_PIPELINE, Quota, Resource, Template, get_template, resources

project_names = st.from_regex(r"[a-z][a-z0-9-]{0,39}", fullmatch=True)


def test_xray_template_names_the_xray_apps_own_buckets_and_topics() -> None:
    from kawa.apps.xray.settings import XraySettings

    s = XraySettings()
    assert set(XRAY_PIPELINE.buckets) == {s.incoming_bucket, s.processed_bucket, s.anonymized_bucket}
    assert set(XRAY_PIPELINE.topics) == {s.images_topic, s.results_topic, s.dead_letter_topic,
                                         s.deid_dead_letter_topic}  # fmt: skip
    assert XRAY_PIPELINE.starter_app == "xray" and (XRAY_PIPELINE.quota.gpus or 0) >= 1
    from kawa.apps.xray.plugin import buckets

    assert set(XRAY_PIPELINE.phi_free) == {b.name for b in buckets(s) if not b.phi}  # the app's own PHI marks


def test_resources_in_a_project_carry_canonical_and_backend_names() -> None:
    found = resources(XRAY_PIPELINE, "radiology")
    assert found[0] == Resource("bucket", "radiology/xray-images", "radiology--xray-images")
    assert Resource("topic", "radiology/xray-results", "radiology.xray-results") in found
    assert len(found) == len(XRAY_PIPELINE.buckets) + len(XRAY_PIPELINE.topics)
    assert resources(EMPTY, "radiology") == []


def test_default_keeps_unprefixed_names() -> None:
    assert {r.backend_name for r in resources(XRAY_PIPELINE, DEFAULT_PROJECT)} == {
        *XRAY_PIPELINE.buckets, *XRAY_PIPELINE.topics
    }  # fmt: skip


@given(st.sampled_from(list(TEMPLATES.values())), project_names)
def test_every_resource_maps_through_the_core(template: Template, project: str) -> None:
    for r in resources(template, project):
        owner, name = split(r.canonical)
        assert owner == project
        mapped = s3_bucket(owner, name) if r.kind == "bucket" else kafka_topic(owner, name)
        assert r.backend_name == mapped


def test_unknown_template_lists_the_known_ones() -> None:
    assert get_template("xray-pipeline") is XRAY_PIPELINE
    with pytest.raises(UnknownTemplate, match="use one of: empty, xray-pipeline"):
        get_template("xray")


def test_quota_round_trips_and_refuses_bad_fields() -> None:
    assert Quota.from_data(XRAY_PIPELINE.quota.data()) == XRAY_PIPELINE.quota
    assert Quota.from_data({"cpus": "2.5", "gpus": "1"}) == Quota(cpus=2.5, gpus=1)
    with pytest.raises(InvalidQuota, match="must be a number"):
        Quota.from_data({"gpus": "many"})
