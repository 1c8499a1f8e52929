"""``kawa projects …`` and ``kawa use``: the project registry from the shell (docs/projects.md).

Every command that changes the registry appends one ``kawa.audit.v1`` record to the audit trail on the log
(``kawa audit`` reads it): who (``--user``, default ``$USER``), project, action, resource, result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from kawa.config import KawaConfig
    from kawa.ml.jobs.policy import Use
    from kawa.projects.registry import ProjectRegistry

projects_app = typer.Typer(help="Create, list, show and delete projects; members and quotas.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")

T = TypeVar("T")
UserOption = Annotated[str | None, typer.Option("--user", help="who the audit record names (default: $USER)")]


def _registry(config: KawaConfig) -> ProjectRegistry:
    from kawa.projects.registry import ProjectRegistry

    return ProjectRegistry.in_home(config.home)


def _who(user: str | None) -> str:
    from kawa.config import shell_environment

    return user or shell_environment().user or "unknown"


def _audited(config: KawaConfig, user: str, project: str, action: str, resource: str, change: Callable[[], T]) -> T:
    """Run ``change`` and append one audit record of it: ``ok``, or ``error`` (then re-raise)."""
    from kawa.errors import KawaError

    try:
        result = change()
    except KawaError:
        _audit(config, user, project, action, resource, "error", 400)
        raise
    _audit(config, user, project, action, resource, "ok", 200)
    return result


def _change(user: str | None, project: str, action: str, resource: str,
            change: Callable[[ProjectRegistry], T]) -> T:  # fmt: skip
    """Apply ``change`` to this home's registry as ``user`` (default ``$USER``), audited."""
    config = get_config()
    registry = _registry(config)
    return _audited(config, _who(user), project, action, resource, lambda: change(registry))


def _audit(config: KawaConfig, user: str, project: str, action: str, resource: str, result: str, status: int) -> None:
    import uuid

    from kawa.audit.record import AuditRecord
    from kawa.audit.trail import AuditTrail
    from kawa.log import open_log

    record = AuditRecord(user=user, action=action, resource=resource, result=result, request_id=uuid.uuid4().hex,
                         project=project, status=status)  # fmt: skip
    log = open_log(config.log.uri, config)
    trail = AuditTrail(log)
    try:
        trail.append(record)
    finally:
        trail.close()
        log.close()


@projects_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="lower-case letters, digits and dashes")],
    template: Annotated[str, typer.Option("--template", "-t", help="empty or xray-pipeline")] = "empty",
    owner: Annotated[str | None, typer.Option("--owner", help="the project's first admin (default: --user)")] = None,
    user: UserOption = None,
) -> None:
    """Create a project from a template, with the template's buckets and topics; its owner becomes its admin."""
    admin = owner or _who(user)
    project = _change(user, name, "projects.create", name, lambda r: r.create(name, template, admin))
    console.print(f"created project {project.name} (template {project.template}), admin: {admin}")
    _provision(project.name, project.template, user, after_create=True)


@projects_app.command("provision")
def provision_cmd(name: Annotated[str, typer.Argument(help="the project")], user: UserOption = None) -> None:
    """Create the project's template buckets and topics that are missing (again after a backend was down)."""
    _provision(name, _registry(get_config()).get(name).template, user)


def _provision(project: str, template: str, user: str | None, *, after_create: bool = False) -> None:
    from kawa.backends import open_backends
    from kawa.errors import KawaError
    from kawa.projects.provision import Provisioned, provision

    config = get_config()

    def run() -> list[Provisioned]:
        with open_backends(config) as backends:
            return provision(backends, project, template)

    try:  # audited alone when run alone; after create it is part of the create's record
        done = run() if after_create else _audited(config, _who(user), project, "projects.provision", project, run)
    except KawaError as exc:
        if not after_create:
            raise
        raise KawaError(f"created project {project!r}, but not its buckets and topics: {exc}; once the backends "
                        f"are up, run `kawa projects provision {project}`") from exc  # fmt: skip
    for item in done:
        state = "created" if item.created else "exists"
        console.print(f"  {state:8} {item.resource.kind} {item.resource.backend_name}", highlight=False)


@projects_app.command("list")
def list_projects(as_json: Annotated[bool, typer.Option("--json", help="one JSON array")] = False) -> None:
    """Every project: template, members, owner."""
    registry = _registry(get_config())
    rows = [{"name": p.name, "template": p.template, "members": len(p.members), "owner": registry.owner(p.name)}
            for p in registry.list()]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("project", "template", "members", "owner")
    for row in rows:
        table.add_row(str(row["name"]), str(row["template"]), str(row["members"]), str(row["owner"] or "-"))
    console.print(table)


@projects_app.command("show")
def show(name: Annotated[str, typer.Argument(help="the project")]) -> None:
    """Members, quota, resources with their backend names, and how to use the project from the shell."""
    from rich.table import Table

    from kawa.projects.core import k8s_namespace
    from kawa.projects.templates import get_template, resources

    registry = _registry(get_config())
    project, quota = registry.get(name), registry.quota(name)
    console.print(f"[bold]{project.name}[/] (template {project.template}, namespace {k8s_namespace(project.name)})")
    members = Table("member", "role", title="members")
    for member, role in sorted(project.members.items()):
        members.add_row(member, role.value)
    console.print(members if project.members else "members: none")
    console.print(_quota_table(name, quota.data()))
    found = resources(get_template(project.template), project.name)
    if found:
        table = Table("kind", "canonical name", "backend name", title="resources")
        for r in found:
            table.add_row(r.kind, r.canonical, r.backend_name)
        console.print(table)
    if project.shared:
        console.print("shared with every user: " + ", ".join(sorted(project.shared)))
    console.print("\nto work in it from the shell:")
    console.print(f"export KAWA_PROJECT={project.name}\n# or, for this home: kawa use {project.name}",
                  markup=False, highlight=False)  # fmt: skip


def _quota_table(project: str, quota: dict[str, float | None]) -> object:
    """The quota beside what the project's active jobs hold now (jobs of this home's scheduler)."""
    from rich.table import Table

    from kawa.ml.jobs.policy import MiB

    held = _job_use(project)
    use = {"cpus": held.cpus, "gpus": held.gpus, "memory_mb": held.memory_bytes / MiB, "concurrent_jobs": held.jobs}
    table = Table("quota", "limit", "in use", title="quota (the job scheduler enforces the first four, every store "
                  "Kawa opens storage_bytes, each function host function_replicas)")  # fmt: skip
    for field, limit in quota.items():
        if field == "storage_bytes":
            table.add_row(field, "no limit" if limit is None else f"{limit:,.0f}", _storage_use(project))
            continue
        now = _number(use[field]) if field in use else "per host"
        table.add_row(field, "no limit" if limit is None else _number(limit), now)
    return table


def _storage_use(project: str) -> str:
    """The bytes the project's buckets hold now (listed), or why they cannot be measured."""
    from kawa.backends import open_backends
    from kawa.errors import KawaError
    from kawa.store.quota import measure, registry_limits

    config = get_config()
    try:
        with open_backends(config) as backends:
            return f"{measure(backends.store, project, registry_limits(config)()):,}"
    except KawaError as exc:
        return f"not measured: {exc}"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


def _job_use(project: str) -> Use:
    from kawa.ml.jobs.policy import Use, held_by_project
    from kawa.ml.jobs.spec import ACTIVE
    from kawa.ml.jobs.store import JobStore

    root = Path(get_config().home).absolute() / "jobs"
    if not (root / "jobs.db").exists():
        return Use()  # no job was ever submitted in this home
    store = JobStore(root)
    try:
        held = held_by_project((j.project, j.spec.resources) for j in store.jobs(set(ACTIVE)))
        return held.get(project, Use())
    finally:
        store.close()


QuotaOption = Annotated[str | None, typer.Option(help="a number, or 'none' for no limit")]


@projects_app.command("set-quota")
def set_quota(
    name: Annotated[str, typer.Argument(help="the project")],
    cpus: QuotaOption = None,
    gpus: QuotaOption = None,
    memory_mb: QuotaOption = None,
    concurrent_jobs: QuotaOption = None,
    storage_bytes: QuotaOption = None,
    function_replicas: QuotaOption = None,
    user: UserOption = None,
) -> None:
    """Change a project's quota; the fields not given keep their values. The job scheduler applies it at once."""
    given = {"cpus": cpus, "gpus": gpus, "memory_mb": memory_mb, "concurrent_jobs": concurrent_jobs,
             "storage_bytes": storage_bytes, "function_replicas": function_replicas}  # fmt: skip
    fields = {field: value for field, value in given.items() if value is not None}
    if not fields:
        from kawa.errors import InvalidQuota

        raise InvalidQuota("give at least one of --cpus, --gpus, --memory-mb, --concurrent-jobs, --storage-bytes, "
                           "--function-replicas (a number, or 'none' for no limit)")  # fmt: skip
    changes = ",".join(f"{field}={value}" for field, value in fields.items())
    quota = _change(user, name, "projects.set-quota", f"{name}/quota/{changes}", lambda r: r.set_quota(name, **fields))
    console.print(_quota_table(name, quota.data()))


@projects_app.command("render")
def render(
    name: Annotated[str, typer.Argument(help="the project")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the files into this folder")] = None,
) -> None:
    """Render the project for the distributed shape: Kubernetes namespace, ResourceQuota, LimitRange and
    RoleBindings; Strimzi KafkaUsers with topic ACLs; one S3 bucket policy per bucket (docs/projects.md)."""
    import yaml

    from kawa.errors import ProjectError
    from kawa.projects import render as rendered
    from kawa.projects.core import s3_bucket
    from kawa.projects.templates import get_template

    config = get_config()
    registry = _registry(config)
    project, quota = registry.get(name), registry.quota(name)
    template = get_template(project.template)
    manifests = rendered.kubernetes(project, quota)
    files: dict[str, str] = {"kubernetes.yaml": yaml.safe_dump_all(manifests, sort_keys=False)}
    try:
        dead_letters = [t for t in template.topics if t.endswith(".dlq")]
        users = rendered.kafka_users(project, dead_letters)
        if users:
            files["kafka-users.yaml"] = yaml.safe_dump_all(users, sort_keys=False)
    except ProjectError as exc:
        console.print(f"[yellow]no Kafka ACLs:[/] {exc}")
    phi_free = (*template.phi_free, *config.portal.phi_free_buckets)
    for bucket in template.buckets:
        free = rendered.is_phi_free(project.name, bucket, phi_free)
        policy = rendered.bucket_policy(project, bucket, phi_free=free)
        if policy is not None:
            files[f"s3/{s3_bucket(project.name, bucket)}.json"] = json.dumps(policy, indent=2) + "\n"
    if output is None:
        for path, text in files.items():
            typer.echo(f"# --- {path}\n{text}", nl=False)
        return
    for path, text in files.items():
        target = output / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        console.print(f"wrote {target}")


@projects_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="the project")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    user: UserOption = None,
) -> None:
    """Remove the project's record (its topics and buckets stay)."""
    _registry(get_config()).get(name)  # an unknown project fails before the question
    if not yes:
        typer.confirm(f"delete project {name}? Its topics and buckets stay", abort=True)
    _change(user, name, "projects.delete", name, lambda r: r.delete(name))
    console.print(f"deleted project {name}")


@projects_app.command("add-member")
def add_member(
    name: Annotated[str, typer.Argument(help="the project")],
    member: Annotated[str, typer.Argument(help="the user to add")],
    role: Annotated[str, typer.Argument(help="viewer, data-engineer, data-scientist, ml-engineer or admin")],
    user: UserOption = None,
) -> None:
    """Add a member with a role (a member already there gets the new role)."""
    _change(user, name, "projects.add-member", f"{name}/members/{member}", lambda r: r.add_member(name, member, role))
    console.print(f"{member} is {role} in {name}")


@projects_app.command("remove-member")
def remove_member(
    name: Annotated[str, typer.Argument(help="the project")],
    member: Annotated[str, typer.Argument(help="the user to remove")],
    user: UserOption = None,
) -> None:
    """Remove a member from a project."""
    _change(user, name, "projects.remove-member", f"{name}/members/{member}", lambda r: r.remove_member(name, member))
    console.print(f"{member} is no longer a member of {name}")


@app.command("use")
def use(
    project: Annotated[str | None, typer.Argument(help="the project to work in (none: show the current one)")] = None,
) -> None:
    """Make a project the current one for this Kawa home, or show the current one and where it came from."""
    from kawa.config import shell_environment
    from kawa.projects.current import current_project, use_project

    config = get_config()
    if project is None:
        current = current_project(config.home, env_project=shell_environment().project)
        typer.echo(f"{current.name} (from {current.source})")
        return
    _registry(config).get(project)  # only a known project
    path = use_project(config.home, project)
    typer.echo(f"current project: {project} (written to {path})")
    if shell_environment().project and shell_environment().project != project:
        typer.echo(f"note: KAWA_PROJECT={shell_environment().project} in this shell still wins")
