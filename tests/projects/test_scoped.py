"""The log and store APIs outside the portal, scoped by (user, project, action): a role by operation by project
matrix against an expected table written out here, run as real calls on the local store and the embedded log,
and the same through the ``kawa`` CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kawa.backends import open_backends
from kawa.config import KawaConfig
from kawa.errors import PermissionDenied
from kawa.log.base import TopicSpec
from kawa.portal.permissions import Role
from kawa.portal.security import users_db_path
from kawa.portal.users import UserStore
from kawa.projects.core import User
from kawa.projects.registry import ProjectRegistry
from kawa.projects.scope import Kind, Op, Scope, topic_project
from kawa.projects.scoped import ScopedBackends, cli_scope, scope_for, scoped

# What a user who is a viewer globally may do, by their role in team-a; in team-b (no role there) nothing.
# Written out from docs/projects.md, not computed from the permission map.
OPS = ("list buckets", "read phi bucket", "read phi-free bucket", "write bucket",
       "list topics", "read records", "produce")  # fmt: skip
EXPECTED: dict[str, set[str]] = {
    "viewer": {"list buckets", "read phi-free bucket", "list topics"},
    "data-engineer": set(OPS),
    "data-scientist": {"list buckets", "read phi-free bucket", "list topics"},
    "ml-engineer": {"list buckets", "read phi-free bucket", "list topics"},
    "admin": set(OPS),
}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[KawaConfig]:
    config = KawaConfig.model_validate({
        "home": str(tmp_path / ".kawa"), "log": {"uri": f"embedded:{tmp_path / 'log'}"}, "store": {"uri": "file:"},
        "portal": {"phi_free_buckets": ["team-a--public", "team-b--public", "team-b--shared"]},
    })  # fmt: skip
    registry = ProjectRegistry.in_home(config.home)
    with open_backends(config) as backends:
        for project in ("team-a", "team-b"):
            registry.create(project)
            for bucket in ("scans", "public", "shared"):
                backends.store.create_bucket(f"{project}--{bucket}")
                backends.store.put(f"{project}--{bucket}", "k", b"v")
            backends.log.create_topic(TopicSpec(f"{project}.events"))
        backends.store.create_bucket("plain")
    registry.share("team-b", "shared")
    yield config


def _calls(backends: ScopedBackends, project: str) -> dict[str, Callable[[], object]]:
    store, log = backends.store, backends.log

    def listed(found: list[str], name: str) -> None:
        if name not in found:
            raise PermissionDenied(f"{name} is not listed")

    def consume() -> None:
        log.consumer(f"g-{project}", [f"{project}.events"]).close()

    def produce() -> None:
        producer = log.producer()
        try:
            producer.send(f"{project}.events", b"x")
        finally:
            producer.close()

    return {
        "list buckets": lambda: listed([b.name for b in store.list_buckets()], f"{project}--scans"),
        "read phi bucket": lambda: store.get(f"{project}--scans", "k").read(),
        "read phi-free bucket": lambda: store.get(f"{project}--public", "k").read(),
        "write bucket": lambda: store.put(f"{project}--scans", "new", b"n"),
        "list topics": lambda: listed(log.list_topics(), f"{project}.events"),
        "read records": consume,
        "produce": produce,
    }


def test_the_matrix_has_no_unauthorized_success_and_every_allowed_call_succeeds(home: KawaConfig) -> None:
    registry = ProjectRegistry.in_home(home.home)
    outcomes: dict[tuple[str, str, str], bool] = {}
    for role in EXPECTED:
        user = f"u-{role}"
        registry.add_member("team-a", user, role)
        with scoped(open_backends(home), scope_for(home, user, Role.VIEWER)) as backends:
            for project in ("team-a", "team-b"):
                for op, call in _calls(backends, project).items():
                    try:
                        call()
                        outcomes[(role, project, op)] = True
                    except PermissionDenied:
                        outcomes[(role, project, op)] = False
    expected = {(role, project, op): project == "team-a" and op in EXPECTED[role]
                for role in EXPECTED for project in ("team-a", "team-b") for op in OPS}  # fmt: skip
    unauthorized = [k for k, ok in outcomes.items() if ok and not expected[k]]
    denied = [k for k, ok in outcomes.items() if not ok and expected[k]]
    assert len(outcomes) == 5 * 2 * 7
    assert unauthorized == [] and denied == []


def test_listings_leave_out_what_the_user_may_not_see_and_refusals_say_what_to_do(home: KawaConfig) -> None:
    ProjectRegistry.in_home(home.home).add_member("team-a", "mia", "data-engineer")
    with scoped(open_backends(home), scope_for(home, "mia", Role.VIEWER)) as backends:
        buckets = [b.name for b in backends.store.list_buckets()]
        assert buckets == ["plain", "team-a--public", "team-a--scans", "team-a--shared", "team-b--shared"]
        assert [t for t in backends.log.list_topics() if "events" in t] == ["team-a.events"]
        assert not backends.store.bucket_exists("team-b--scans") and backends.store.bucket_exists("team-a--scans")
        # A shared, PHI-free bucket of team-b is readable, not writable.
        with backends.store.get("team-b--shared", "k") as reader:
            assert reader.read() == b"v"
        with pytest.raises(PermissionDenied) as caught:
            backends.store.put("team-b--shared", "x", b"x")
        assert "bucket 'team-b--shared' belongs to project 'team-b'" in str(caught.value)
        assert "kawa projects add-member team-b mia ROLE" in str(caught.value)
        with pytest.raises(PermissionDenied, match=r"may not buckets\.write on bucket 'plain'"):
            backends.store.delete("plain", "k", missing_ok=True)  # default's: the global role (viewer)
        with pytest.raises(PermissionDenied, match=r"topics\.write"):
            backends.log.create_topic(TopicSpec("team-b.more"))
        backends.log.create_topic(TopicSpec("team-a.more"))
        with pytest.raises(PermissionDenied, match=r"buckets\.write"):
            backends.store.copy("team-a--scans", "k", "team-b--scans", "stolen")
        with pytest.raises(PermissionDenied, match=r"portal\.view"):
            backends.store.copy("team-b--scans", "k", "team-a--scans", "stolen")
    with open_backends(home) as backends:
        assert not backends.store.bucket_exists("team-b--more") and "team-a.more" in backends.log.list_topics()
        assert [o.key for o in backends.store.list_objects("team-b--scans").objects] == ["k"]


def test_a_topic_belongs_to_its_registered_prefix() -> None:
    assert topic_project("team-a.events", {"team-a"}) == "team-a"
    assert topic_project("xray.results", {"team-a"}) == "default"
    assert topic_project("team-a.", {"team-a"}) == "default"
    scope = Scope(User("p", platform_admin=True), {})
    assert scope.allows(Kind.BUCKET, "anything", Op.WRITE) and scope.allows(Kind.TOPIC, "t", Op.READ)


def test_the_shell_acts_as_the_user_kawa_user_names(home: KawaConfig) -> None:
    assert cli_scope(home, None).user.platform_admin  # nobody named: the home's owner, as before projects
    assert cli_scope(home, "mia").user.global_role is None  # no portal users yet: only project roles count
    users = UserStore(users_db_path(home))
    try:
        users.add_user("root", Role.ADMIN)
        users.add_user("mia", Role.VIEWER)
        users.add_user("gone", Role.DATA_ENGINEER)
        users.set_disabled("gone", True)
    finally:
        users.close()
    assert cli_scope(home, "root").user.platform_admin
    assert cli_scope(home, "mia").user.global_role is Role.VIEWER and not cli_scope(home, "mia").user.platform_admin
    assert cli_scope(home, "stranger").user.global_role is None and cli_scope(home, "gone").user.global_role is None


def _kawa(home: KawaConfig, user: str, *args: str) -> object:
    from kawa.cli import _register
    from kawa.cli.app import app

    _register()
    args = ("--home", str(home.home), "--log", home.log.uri, *args)
    return CliRunner().invoke(app, list(args), input="hi\n", env={"KAWA_USER": user or None})


def test_the_cli_checks_every_store_and_log_command(home: KawaConfig, tmp_path: Path) -> None:
    ProjectRegistry.in_home(home.home).add_member("team-a", "mia", "data-engineer")
    users = UserStore(users_db_path(home))
    try:
        users.add_user("mia", Role.VIEWER)
    finally:
        users.close()
    listed = _kawa(home, "mia", "buckets", "list")
    assert listed.exit_code == 0, listed.output  # type: ignore[attr-defined]
    assert "team-a--scans" in listed.output and "team-b--scans" not in listed.output  # type: ignore[attr-defined]
    topics = _kawa(home, "mia", "topics", "list")
    assert "team-a.events" in topics.output and "team-b.events" not in topics.output  # type: ignore[attr-defined]
    upload = tmp_path / "scan.bin"
    upload.write_bytes(b"s" * 10)
    assert _kawa(home, "mia", "put", "team-a--scans", str(upload)).exit_code == 0  # type: ignore[attr-defined]
    for args in (("put", "team-b--scans", str(upload)), ("ls", "team-b--scans"), ("get", "team-b--scans", "k"),
                 ("rm", "team-b--scans", "k"), ("topics", "describe", "team-b.events"),
                 ("produce", "team-b.events")):  # fmt: skip
        refused = _kawa(home, "mia", *args)
        assert isinstance(refused.exception, PermissionDenied), (args, refused.output)  # type: ignore[attr-defined]
        assert "belongs to project 'team-b'" in str(refused.exception)  # type: ignore[attr-defined]
    with open_backends(home) as backends:
        assert [o.key for o in backends.store.list_objects("team-b--scans").objects] == ["k"]
        assert [o.key for o in backends.store.list_objects("team-a--scans").objects] == ["k", "scan.bin"]
    owner = _kawa(home, "", "ls", "team-b--scans")  # KAWA_USER unset: the home's owner
    assert owner.exit_code == 0 and owner.output.split() == ["k"]  # type: ignore[attr-defined]
