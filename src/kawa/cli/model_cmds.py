"""``kawa jobs …``, ``kawa models …`` and ``kawa serve-model``: the model lifecycle from the shell."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from kawa.ml.jobs import Job, JobSpec
    from kawa.ml.registry import AliasMove, Registry

jobs_app = typer.Typer(help="Submit, list, follow and cancel training jobs.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models, versions and aliases.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")

Cpu = Annotated[float, typer.Option("--cpu", help="CPUs to reserve (fractions allowed)")]
Mem = Annotated[str | None, typer.Option("--mem", help="memory to reserve, e.g. 4G")]
Gpu = Annotated[int, typer.Option("--gpu", help="whole GPUs to allocate")]
Param = Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE for the job, repeatable")]
Project = Annotated[
    str | None,
    typer.Option("--project", help="its project: fair share and quota (default: $KAWA_PROJECT, `kawa use`, default)"),
]
Timeout = Annotated[float | None, typer.Option("--timeout", help="kill the job after this many seconds")]


def _spec(
    entrypoint: str,
    cpu: float,
    mem: str | None,
    gpu: int,
    param: list[str] | None,
    project: str | None,
    timeout: float | None,
) -> JobSpec:
    from kawa.config import shell_environment
    from kawa.ml.jobs import JobSpec, parse_params
    from kawa.projects.current import current_project

    if project is None:
        project = current_project(get_config().home, env_project=shell_environment().project).name

    return JobSpec.build(
        entrypoint,
        cpu=cpu,
        mem=mem,
        gpu=gpu,
        params=parse_params(param),
        project=project,
        timeout_s=timeout,
        cwd=str(Path.cwd()),
    )


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "-"


def _show(job: Job) -> None:
    gpus = ",".join(map(str, job.gpus)) or "-"
    extra = f"  ({job.error})" if job.error else ""
    console.print(
        f"job [bold]{job.id}[/] {job.state.value} project={job.project} {job.spec.resources.describe()} "
        f"gpus={gpus} exit={job.exit_code if job.exit_code is not None else '-'}{extra}",
        highlight=False,
    )


@jobs_app.command("submit")
def jobs_submit(
    entrypoint: Annotated[str, typer.Argument(help="module:function, or a command line (quote it)")],
    cpu: Cpu = 1.0,
    mem: Mem = None,
    gpu: Gpu = 0,
    param: Param = None,
    project: Project = None,
    timeout: Timeout = None,
    wait: Annotated[bool, typer.Option("--wait", help="run the scheduler here until the job is done")] = False,
) -> None:
    """Queue a job; with --wait run it here and print its log. Refused when this machine can never fit it."""
    from kawa.ml.jobs import JobState, Scheduler

    config = get_config()
    scheduler = Scheduler(config)
    job = scheduler.submit(_spec(entrypoint, cpu, mem, gpu, param, project, timeout))
    if not wait:
        console.print(
            f"queued job [bold]{job.id}[/] ({job.spec.resources.describe()}); "
            f"`kawa up` runs it, `kawa jobs logs {job.id}` follows it",
            highlight=False,
        )
        return
    console.print(f"job [bold]{job.id}[/] queued on {scheduler.inventory.describe()}", highlight=False)
    log_file = scheduler.log_path(job.id)
    printed = 0

    def follow(_: Job) -> None:  # stream the job's output while it runs
        nonlocal printed
        if log_file.exists():
            with open(log_file, "rb") as f:
                f.seek(printed)
                chunk = f.read()
            printed += len(chunk)
            if chunk:
                typer.echo(chunk.decode(errors="replace"), nl=False)

    job = scheduler.wait(job.id, on_tick=follow)
    follow(job)
    _show(job)
    if job.state is not JobState.SUCCEEDED:
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(limit: Annotated[int, typer.Option(help="show this many, newest first")] = 50) -> None:
    """List jobs, newest first."""
    from rich.table import Table

    from kawa.ml.jobs import JobStore

    store = JobStore(Path(get_config().home).absolute() / "jobs")
    table = Table("id", "state", "project", "entry point", "request", "gpus", "submitted", "started", "ended")
    for j in store.jobs(limit=limit):
        table.add_row(
            j.id,
            j.state.value,
            j.project,
            j.spec.entrypoint[:40],
            j.spec.resources.describe(),
            ",".join(map(str, j.gpus)) or "-",
            _when(j.submitted_at),
            _when(j.started_at),
            _when(j.finished_at),
        )
    console.print(table)


@jobs_app.command("logs")
def jobs_logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
) -> None:
    """Print a job's output (stdout and stderr)."""
    from kawa.ml.jobs import JobStore

    store = JobStore(Path(get_config().home).absolute() / "jobs")
    job = store.get(job_id)
    path = store.log_path(job.id)
    pos = 0
    while True:
        if path.exists():
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos += len(chunk)
            typer.echo(chunk.decode(errors="replace"), nl=False)
        if not follow or store.get(job_id).state.finished:
            break
        time.sleep(0.5)


@jobs_app.command("progress")
def jobs_progress(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
) -> None:
    """Print a job's progress records (what it reports with `kawa.ml.jobs.progress`)."""
    from kawa.ml import jobs

    config = get_config()
    records = (
        jobs.follow_progress(job_id, config=config, drive=False)
        if follow
        else iter([p for p in [jobs.last_progress(job_id, config=config)] if p is not None])
    )
    shown = False
    for p in records:
        shown = True
        share = f" ({p.fraction:.0%})" if p.fraction is not None else ""
        console.print(f"{_when(p.time)} {p.message or 'progress'} {p.done}/{p.total}{share}", highlight=False)
    if not shown:
        console.print(f"job {job_id} has reported no progress yet")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job: a queued one at once, a running one by killing its process group."""
    from kawa.ml.jobs import Scheduler

    scheduler = Scheduler(get_config())
    job = scheduler.cancel(job_id)
    deadline = time.monotonic() + scheduler.config.ml.kill_grace_s + 5
    while not job.state.finished and time.monotonic() < deadline:
        time.sleep(0.2)
        job = scheduler.get(job_id)
    _show(job)


@jobs_app.command("render")
def jobs_render(
    entrypoint: Annotated[str, typer.Argument(help="module:function, or a command line (quote it)")],
    cpu: Cpu = 1.0,
    mem: Mem = None,
    gpu: Gpu = 0,
    param: Param = None,
    project: Project = None,
    timeout: Timeout = None,
    image: Annotated[str, typer.Option(help="container image with Kawa and the job's code")] = "python:3.11-slim",
    namespace: Annotated[
        str | None, typer.Option(help="Kubernetes namespace (default: the project's, as `kawa projects render`)")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the manifest here")] = None,
) -> None:
    """Render the job as a Kubernetes batch/v1 Job manifest (for the cluster target)."""
    from kawa.errors import KawaError
    from kawa.ml.jobs import render_yaml
    from kawa.projects.core import check_name, k8s_namespace

    spec = _spec(entrypoint, cpu, mem, gpu, param, project, timeout)
    if namespace is None:
        try:
            namespace = k8s_namespace(check_name(spec.project))  # where its ResourceQuota and RoleBindings are
        except KawaError:
            namespace = None  # a free-form job label that is no project name: the current kubectl namespace
    text = render_yaml(spec, image=image, namespace=namespace)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"wrote {output}")


# --- models -----------------------------------------------------------------------------------------


def _registry() -> Registry:
    """A registry that only reads (listing publishes nothing)."""
    from kawa.ml.registry import Registry

    return Registry(get_config(), publish=False)


@contextmanager
def _moving_registry() -> Iterator[Registry]:
    """A registry whose alias moves are published on the configured log (opened by the backends)."""
    from kawa.backends import open_backends
    from kawa.ml.registry import Registry

    with open_backends(get_config()) as backends:
        registry = Registry(backends)
        try:
            yield registry
        finally:
            registry.close()


@models_app.command("list")
def models_list() -> None:
    """List registered models with their latest version and aliases."""
    from rich.table import Table

    registry = _registry()
    table = Table("model", "latest", "aliases")
    for m in registry.list_models():
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())) or "-"
        table.add_row(m.name, str(m.latest_version or "-"), aliases)
    console.print(table)


@models_app.command("versions")
def models_versions(name: str, as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List a model's versions with aliases, metrics and lineage (job, code version, data read)."""
    from dataclasses import asdict

    from rich.table import Table

    versions = _registry().versions(name)
    if as_json:
        typer.echo(json.dumps([asdict(v) for v in versions], indent=2))
        return
    table = Table("version", "aliases", "metrics", "lineage", "run", "created")
    for v in versions:
        metrics = " ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items()))
        lineage = " ".join(f"{k.removeprefix('kawa.')}={val}" for k, val in sorted(v.lineage.items()))
        table.add_row(
            str(v.version),
            ",".join(v.aliases) or "-",
            metrics or "-",
            lineage or "-",
            (v.run_id or "-")[:12],
            _when(v.created_ms / 1000),
        )
    console.print(table)


@models_app.command("promote")
def models_promote(
    name: str,
    version: int,
    alias: Annotated[str, typer.Option("--alias", "-a", help="alias to move")] = "champion",
) -> None:
    """Point ALIAS at VERSION; running functions and servers swap to it. Published on kawa.models."""
    with _moving_registry() as registry:
        move = registry.promote(name, version, alias)
    console.print(f"{name}@{alias}: {move.previous or '-'} → [bold]{move.version}[/]", highlight=False)
    _warn_unpublished(move)


@models_app.command("rollback")
def models_rollback(
    name: str,
    alias: Annotated[str, typer.Option("--alias", "-a", help="alias to move back")] = "champion",
) -> None:
    """Move ALIAS back to the version it pointed to before its last move."""
    with _moving_registry() as registry:
        move = registry.rollback(name, alias)
    console.print(f"{name}@{alias}: {move.previous} → [bold]{move.version}[/] (rolled back)", highlight=False)
    _warn_unpublished(move)


@models_app.command("lineage")
def models_lineage(
    name: str, version: int, as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False
) -> None:
    """What VERSION was trained on: its run, the data it read, its parent version, job and code version."""
    from dataclasses import asdict

    found = _registry().lineage(name, version)
    if as_json:
        typer.echo(json.dumps(asdict(found), indent=2))
        return
    console.print(f"[bold]{name}/{version}[/]", highlight=False)
    console.print(f"  run: {found.run_id or '-'}   job: {found.job_id or '-'}   code: {found.code_version or '-'}")
    console.print(f"  parent version: {found.parent_version if found.parent_version is not None else '-'}")
    for input_name, fields in sorted(found.data.items()):
        described = " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
        console.print(f"  data [bold]{input_name}[/]: {described}", highlight=False)


def _warn_unpublished(move: AliasMove) -> None:
    if not move.published:
        from kawa.cli.app import err_console

        err_console.print(
            "[yellow]warning:[/] the registry moved, but the event on the kawa.models topic could not be "
            "written (is the event log reachable?); running models follow at their next registry poll"
        )


@app.command("serve-model")
def serve_model(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS (follows alias moves) or NAME/VERSION")],
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8080,
    max_batch: Annotated[int, typer.Option("--max-batch", help="most rows in one model call")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="longest a request waits for a batch")] = 5.0,
    poll_interval: Annotated[float, typer.Option(help="seconds between registry checks")] = 1.0,
    no_log: Annotated[bool, typer.Option("--no-log", help="neither log predictions nor follow kawa.models")] = False,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", help='route each request\'s "parameters": {"unit": ...} to its arm'),
    ] = None,
) -> None:
    """Serve a registered model over Open Inference Protocol v2 (REST) with micro-batching."""
    import logging

    from kawa.ml.serving import ModelServer

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kawa.ml").setLevel(logging.INFO)  # loads and swaps

    from kawa.backends import open_backends

    config = get_config()
    backends = open_backends(config)
    event_log = None if no_log else backends.log
    server = ModelServer(
        config,
        ref,
        host=host,
        port=port,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        log=event_log,
        poll_interval_s=poll_interval,
        experiment=experiment,
    )
    console.print(
        f"serving [bold]{ref}[/] (version {server.handle.version}, {server.handle.current().flavor}) on "
        f"{server.url}/v2/models/{server.handle.name}/infer",
        highlight=False,
    )
    try:
        server.run()
    finally:
        backends.close()
