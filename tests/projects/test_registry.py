"""The project registry: one JSON file in the Kawa home, changed under a lock by any number of processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from kawa.errors import (
    InvalidQuota,
    KawaError,
    MemberNotFound,
    ProjectError,
    ProjectExists,
    ProjectNotFound,
    UnknownTemplate,
)
from kawa.portal.permissions import Action, Role, UnknownRole
from kawa.projects.core import DEFAULT_PROJECT, InvalidProjectName, User, can, can_read_shared
from kawa.projects.current import current_project, use_project
from kawa.projects.registry import OWNER_ROLE, ProjectRegistry
from kawa.projects.templates import UNLIMITED, XRAY_PIPELINE, Quota


@pytest.fixture
def registry(tmp_path: Path) -> ProjectRegistry:
    return ProjectRegistry.in_home(tmp_path / "home")


def test_default_always_exists_without_being_stored(registry: ProjectRegistry) -> None:
    assert [p.name for p in registry.list()] == [DEFAULT_PROJECT]
    assert registry.get(DEFAULT_PROJECT).members == {}
    assert registry.quota(DEFAULT_PROJECT) == UNLIMITED  # no limits until an admin sets some
    assert not registry.path.exists()
    with pytest.raises(ProjectExists, match="always exists"):
        registry.create(DEFAULT_PROJECT)
    with pytest.raises(ProjectError, match="cannot be deleted"):
        registry.delete(DEFAULT_PROJECT)


def test_create_makes_the_owner_the_strongest_role_and_takes_the_template_quota(registry: ProjectRegistry) -> None:
    project = registry.create("radiology", "xray-pipeline", owner="ann")
    assert OWNER_ROLE is Role.ADMIN and project.members == {"ann": Role.ADMIN} and project.template == "xray-pipeline"
    assert all(can(User("ann"), project, action) for action in Action)
    assert registry.quota("radiology") == XRAY_PIPELINE.quota
    assert registry.owner("radiology") == "ann"
    assert [p.name for p in registry.list()] == [DEFAULT_PROJECT, "radiology"]
    assert registry.get("radiology") == project


def test_json_survives_reopening(registry: ProjectRegistry) -> None:
    registry.create("team-a", owner="ann")
    registry.add_member("team-a", "bob", "data-scientist")
    registry.share("team-a", "scores")
    registry.set_quota("team-a", gpus=2, cpus=1.5)
    again = ProjectRegistry(registry.path)
    project = again.get("team-a")
    assert project.members == {"ann": Role.ADMIN, "bob": Role.DATA_SCIENTIST}
    assert project.shared == frozenset({"team-a/scores"})
    assert again.quota("team-a") == Quota(gpus=2, cpus=1.5)
    assert json.loads(registry.path.read_text())["projects"]["team-a"]["members"]["bob"] == "data-scientist"


def test_members_are_added_changed_and_removed(registry: ProjectRegistry) -> None:
    registry.create("team-a", owner="ann")
    registry.add_member("team-a", "bob", Role.VIEWER)
    assert not can(User("bob"), registry.get("team-a"), Action.JOBS_SUBMIT)
    registry.add_member("team-a", "bob", "ml-engineer")
    assert can(User("bob"), registry.get("team-a"), Action.JOBS_SUBMIT)
    assert registry.remove_member("team-a", "bob").members == {"ann": Role.ADMIN}
    assert not can(User("bob"), registry.get("team-a"), Action.VIEW)
    with pytest.raises(MemberNotFound, match=r"'bob' is not a member of project 'team-a'; its members: ann"):
        registry.remove_member("team-a", "bob")


def test_default_is_stored_once_it_has_members(registry: ProjectRegistry) -> None:
    registry.add_member(DEFAULT_PROJECT, "ann", "viewer")
    assert ProjectRegistry(registry.path).get(DEFAULT_PROJECT).members == {"ann": Role.VIEWER}
    assert [p.name for p in registry.list()] == [DEFAULT_PROJECT]


def test_shared_resources_are_readable_by_non_members(registry: ProjectRegistry) -> None:
    registry.create("team-a", owner="ann")
    project = registry.share("team-a", "team-a/scores")
    assert can_read_shared(User("eve"), project, "team-a/scores")
    assert not can_read_shared(User("eve"), project, "team-a/raw")
    with pytest.raises(ProjectError, match="belongs to project 'team-b'"):
        registry.share("team-a", "team-b/scores")


def test_delete_removes_the_record(registry: ProjectRegistry) -> None:
    registry.create("team-a")
    registry.delete("team-a")
    assert registry.names() == [DEFAULT_PROJECT]
    with pytest.raises(ProjectNotFound):
        registry.get("team-a")
    registry.create("team-a")  # the name is free again


def test_errors_say_what_to_do(registry: ProjectRegistry) -> None:
    registry.create("team-a")
    with pytest.raises(ProjectNotFound, match=r"no project 'nope'; known projects: default, team-a"):
        registry.get("nope")
    with pytest.raises(ProjectNotFound, match="known projects"):
        registry.add_member("nope", "ann", "viewer")
    with pytest.raises(ProjectExists, match="already exists"):
        registry.create("team-a")
    with pytest.raises(UnknownRole, match="use one of: viewer, data-engineer, data-scientist, ml-engineer, admin"):
        registry.add_member("team-a", "ann", "boss")
    with pytest.raises(InvalidProjectName, match="lower-case"):
        registry.create("Team_A")
    with pytest.raises(UnknownTemplate, match="use one of: empty, xray-pipeline"):
        registry.create("team-b", "nope")
    with pytest.raises(InvalidQuota, match="unknown quota field"):
        registry.set_quota("team-a", tpus=1)
    with pytest.raises(InvalidQuota, match="zero or more"):
        registry.set_quota("team-a", gpus=-1)
    assert registry.names() == [DEFAULT_PROJECT, "team-a"]  # failed changes wrote nothing
    assert registry.get("team-a").members == {}


def test_a_broken_file_is_reported_not_overwritten(registry: ProjectRegistry) -> None:
    registry.path.parent.mkdir(parents=True)
    registry.path.write_text("{not json")
    with pytest.raises(ProjectError, match="not valid JSON"):
        registry.create("team-a")
    assert registry.path.read_text() == "{not json"


def _add_member(path: str, user: str) -> None:
    ProjectRegistry(Path(path)).add_member("team-a", user, "viewer")


def test_concurrent_processes_lose_no_update(registry: ProjectRegistry) -> None:
    registry.create("team-a", owner="ann")
    users = [f"user-{i}" for i in range(12)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(6) as pool:
        pool.starmap(_add_member, [(str(registry.path), u) for u in users])
    members = ProjectRegistry(registry.path).get("team-a").members
    assert set(members) == {"ann", *users}
    assert not [p for p in registry.path.parent.iterdir() if p.name.startswith(".projects.json.")]  # no temp left


def test_current_project_flag_over_env_over_use_file_over_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert current_project(home) == (DEFAULT_PROJECT, "default")
    written = use_project(home, "team-a")
    assert current_project(home) == ("team-a", str(written))
    assert current_project(home, env_project="team-b") == ("team-b", "KAWA_PROJECT")
    assert current_project(home, flag="team-c", env_project="team-b") == ("team-c", "--project")
    with pytest.raises(KawaError, match="invalid project name"):
        current_project(home, env_project="Not Valid")
