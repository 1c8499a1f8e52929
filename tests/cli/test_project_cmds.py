"""``kawa projects …`` and ``kawa use`` on an embedded log: the registry changes, and each change is audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from kawa.audit.trail import AuditFilter, read_audit
from kawa.config import KawaConfig
from kawa.errors import KawaError, ProjectNotFound, QuotaExceeded
from kawa.log import open_log
from kawa.ml.jobs.policy import Placement
from kawa.ml.jobs.store import JobStore
from kawa.portal.permissions import Role
from kawa.projects.registry import ProjectRegistry
from kawa.projects.templates import Quota
from kawa.store import open_store


@pytest.fixture
def cli() -> object:
    from kawa.cli import _register
    from kawa.cli.app import app

    _register()
    return app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("USER", "ann")
    return tmp_path / "home"


def kawa(cli: object, home: Path, *args: str, stdin: str | None = None) -> Result:
    log = f"embedded:{home / 'log'}"
    return CliRunner().invoke(cli, ["--home", str(home), "--log", log, *args], input=stdin)  # type: ignore[arg-type]


def audit(home: Path, **where: str) -> list[tuple[str, str, str, str, str]]:
    log = open_log(f"embedded:{home / 'log'}", KawaConfig(home=home))
    try:
        return [(r.user, r.project, r.action, r.resource, r.result) for r in read_audit(log, AuditFilter(**where))]
    finally:
        log.close()


def test_create_show_list_and_the_audit_record(cli: object, home: Path) -> None:
    created = kawa(cli, home, "projects", "create", "radiology", "--template", "xray-pipeline")
    assert created.exit_code == 0, created.output
    assert "created project radiology (template xray-pipeline), admin: ann" in created.output
    assert ProjectRegistry.in_home(home).get("radiology").members == {"ann": Role.ADMIN}
    assert audit(home) == [("ann", "radiology", "projects.create", "radiology", "ok")]
    # The template's buckets and topics exist now, under their backend names.
    assert "created  bucket radiology--xray-images" in created.output
    assert "created  topic radiology.xray-deid.dlq" in created.output
    log = open_log(f"embedded:{home / 'log'}", KawaConfig(home=home))
    data = open_store("file:", KawaConfig(home=home), log=log)
    try:
        assert [b.name for b in data.list_buckets()] == [
            "radiology--xray-images", "radiology--xray-images-anonymized", "radiology--xray-images-processed"]
        assert {"radiology.xray-images", "radiology.xray-results", "radiology.xray-images.dlq",
                "radiology.xray-deid.dlq"} <= set(log.list_topics())  # fmt: skip
        data.delete_bucket("radiology--xray-images")  # gone: provisioning again creates it, keeps the others
    finally:
        data.close()
        log.close()
    again = kawa(cli, home, "projects", "provision", "radiology")
    assert again.exit_code == 0, again.output
    assert "created  bucket radiology--xray-images" in again.output
    assert "exists   bucket radiology--xray-images-processed" in again.output
    assert audit(home)[-1] == ("ann", "radiology", "projects.provision", "radiology", "ok")
    empty = kawa(cli, home, "projects", "create", "quiet")
    assert empty.exit_code == 0 and "bucket" not in empty.output

    shown = kawa(cli, home, "projects", "show", "radiology")
    assert shown.exit_code == 0, shown.output
    for text in ("ann", "admin", "gpus", "radiology--xray-images-processed", "radiology.xray-results",
                 "kawa-radiology", "export KAWA_PROJECT=radiology"):  # fmt: skip
        assert text in shown.output

    listed = kawa(cli, home, "projects", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == [
        {"name": "default", "template": "empty", "members": 0, "owner": None},
        {"name": "quiet", "template": "empty", "members": 1, "owner": "ann"},
        {"name": "radiology", "template": "xray-pipeline", "members": 1, "owner": "ann"},
    ]
    table = kawa(cli, home, "projects", "list")
    assert "radiology" in table.output and "xray-pipeline" in table.output


def test_members_are_added_and_removed_each_with_one_audit_record(cli: object, home: Path) -> None:
    assert kawa(cli, home, "projects", "create", "team-a", "--owner", "carol").exit_code == 0
    added = kawa(cli, home, "projects", "add-member", "team-a", "bob", "data-scientist", "--user", "carol")
    assert added.exit_code == 0, added.output
    assert ProjectRegistry.in_home(home).get("team-a").members == {"carol": Role.ADMIN, "bob": Role.DATA_SCIENTIST}
    removed = kawa(cli, home, "projects", "remove-member", "team-a", "bob", "--user", "carol")
    assert removed.exit_code == 0, removed.output
    assert ProjectRegistry.in_home(home).get("team-a").members == {"carol": Role.ADMIN}
    assert audit(home, user="carol") == [
        ("carol", "team-a", "projects.add-member", "team-a/members/bob", "ok"),
        ("carol", "team-a", "projects.remove-member", "team-a/members/bob", "ok"),
    ]


def test_a_refused_change_is_audited_as_an_error(cli: object, home: Path) -> None:
    assert kawa(cli, home, "projects", "create", "team-a").exit_code == 0
    bad = kawa(cli, home, "projects", "add-member", "team-a", "bob", "boss")
    assert bad.exit_code != 0 and isinstance(bad.exception, KawaError)
    assert "use one of: viewer" in str(bad.exception)
    assert audit(home, result="error") == [("ann", "team-a", "projects.add-member", "team-a/members/bob", "error")]
    assert "bob" not in ProjectRegistry.in_home(home).get("team-a").members


def test_delete_asks_unless_yes(cli: object, home: Path) -> None:
    assert kawa(cli, home, "projects", "create", "team-a").exit_code == 0
    kept = kawa(cli, home, "projects", "delete", "team-a", stdin="n\n")
    assert kept.exit_code != 0 and ProjectRegistry.in_home(home).names() == ["default", "team-a"]
    deleted = kawa(cli, home, "projects", "delete", "team-a", "--yes")
    assert deleted.exit_code == 0, deleted.output
    with pytest.raises(ProjectNotFound):
        ProjectRegistry.in_home(home).get("team-a")
    assert [a[2:] for a in audit(home)] == [("projects.create", "team-a", "ok"), ("projects.delete", "team-a", "ok")]


def test_use_writes_the_current_project_and_says_where_it_came_from(
    cli: object, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "default (from default)" in kawa(cli, home, "use").output
    unknown = kawa(cli, home, "use", "team-a")
    assert isinstance(unknown.exception, ProjectNotFound)
    assert kawa(cli, home, "projects", "create", "team-a").exit_code == 0
    used = kawa(cli, home, "use", "team-a")
    assert used.exit_code == 0, used.output
    assert (home / "current-project").read_text().strip() == "team-a"
    assert "team-a (from" in kawa(cli, home, "use").output and "current-project" in kawa(cli, home, "use").output
    monkeypatch.setenv("KAWA_PROJECT", "default")
    assert "default (from KAWA_PROJECT)" in kawa(cli, home, "use").output


def test_errors_reach_the_shell_as_one_line(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")  # this checkout's code, wherever the venv points
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KAWA_HOME": str(tmp_path / "home"), "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-m", "kawa.cli", "projects", "show", "nope"], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 1
    assert "no project 'nope'; known projects: default" in done.stderr and "Traceback" not in done.stderr


def test_set_quota_is_audited_shown_beside_use_and_enforced_in_the_current_project(
    cli: object, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAWA_PROJECT", raising=False)
    assert kawa(cli, home, "projects", "create", "team-a").exit_code == 0
    changed = kawa(cli, home, "projects", "set-quota", "team-a", "--memory-mb", "1024", "--concurrent-jobs", "none")
    assert changed.exit_code == 0, changed.output
    assert ProjectRegistry.in_home(home).quota("team-a") == Quota(memory_mb=1024, concurrent_jobs=None)
    assert audit(home)[-1] == ("ann", "team-a", "projects.set-quota",
                               "team-a/quota/memory_mb=1024,concurrent_jobs=none", "ok")  # fmt: skip
    bad = kawa(cli, home, "projects", "set-quota", "team-a", "--gpus", "many")
    assert isinstance(bad.exception, KawaError) and "must be a number or 'none'" in str(bad.exception)
    assert audit(home)[-1][-1] == "error"

    assert kawa(cli, home, "use", "team-a").exit_code == 0  # jobs submit now lands in team-a
    queued = kawa(cli, home, "jobs", "submit", "python -c pass", "--cpu", "1.5", "--mem", "512M")
    assert queued.exit_code == 0, queued.output
    store = JobStore(home / "jobs")
    try:
        (job,) = store.jobs()
        assert job.project == "team-a"
        store.claim(lambda waiting, active: [Placement(waiting[0].id, ())])  # as a scheduler starting it would
    finally:
        store.close()
    data = open_store("file:", KawaConfig(home=home))
    try:
        data.create_bucket("team-a--data")
        data.put("team-a--data", "x", b"d" * 1234)
        data.create_bucket("other")
        data.put("other", "y", b"o" * 99)  # default's, not team-a's
    finally:
        data.close()
    shown = kawa(cli, home, "projects", "show", "team-a")
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in shown.output.splitlines() if line.count("│") == 4}  # fmt: skip
    assert rows["cpus"] == ["4", "1.50"] and rows["memory_mb"] == ["1,024", "512"]
    assert rows["concurrent_jobs"] == ["no limit", "1"] and rows["storage_bytes"] == ["10,737,418,240", "1,234"]
    assert rows["function_replicas"][1] == "per host"

    over = kawa(cli, home, "jobs", "submit", "python -c pass", "--mem", "2G")
    assert isinstance(over.exception, QuotaExceeded)
    assert "quota of 1024 memory_mb" in str(over.exception)
    assert "set-quota team-a --memory-mb 2048" in str(over.exception)


def test_render_writes_kubernetes_kafka_and_s3_policies_for_the_projects_members(cli: object, home: Path) -> None:
    import yaml

    assert kawa(cli, home, "projects", "create", "radiology", "--template", "xray-pipeline").exit_code == 0
    assert kawa(cli, home, "projects", "add-member", "radiology", "vera", "viewer").exit_code == 0
    out = home.parent / "rendered"
    done = kawa(cli, home, "projects", "render", "radiology", "-o", str(out))
    assert done.exit_code == 0, done.output
    docs = list(yaml.safe_load_all((out / "kubernetes.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Namespace", "ResourceQuota", "LimitRange", "RoleBinding", "RoleBinding"]
    assert docs[1]["spec"]["hard"]["requests.nvidia.com/gpu"] == "1"  # the template's quota
    users = {u["metadata"]["annotations"]["kawa.dev/user"] for u in yaml.safe_load_all((out / "kafka-users.yaml")
                                                                                     .read_text())}  # fmt: skip
    assert users == {"ann", "vera"}
    policies = {p.stem: json.loads(p.read_text()) for p in (out / "s3").glob("*.json")}
    assert set(policies) == {"radiology--xray-images", "radiology--xray-images-processed",
                             "radiology--xray-images-anonymized"}  # fmt: skip
    readers = {b: p["Statement"][0]["Principal"]["AWS"] for b, p in policies.items()}
    assert readers["radiology--xray-images"] == ["arn:aws:iam:::user/ann"]  # PHI: the admin, not the viewer
    assert "arn:aws:iam:::user/vera" in readers["radiology--xray-images-anonymized"]

    default = kawa(cli, home, "projects", "render", "default")
    assert default.exit_code == 0, default.output
    assert "no Kafka ACLs" in default.output and "# --- kubernetes.yaml" in default.output


def test_a_project_whose_resources_cannot_be_made_says_how_to_retry(cli: object, home: Path) -> None:
    home.mkdir(parents=True)
    (home / "buckets").write_text("not a directory")  # the local store cannot live here
    created = kawa(cli, home, "projects", "create", "radiology", "--template", "xray-pipeline")
    assert isinstance(created.exception, KawaError)
    message = str(created.exception)
    assert "created project 'radiology', but not its buckets and topics" in message
    assert "cannot keep a local store" in message and "kawa projects provision radiology" in message
    assert ProjectRegistry.in_home(home).get("radiology").template == "xray-pipeline"  # the record stays
    (home / "buckets").unlink()
    retried = kawa(cli, home, "projects", "provision", "radiology")
    assert retried.exit_code == 0 and "created  bucket radiology--xray-images" in retried.output
