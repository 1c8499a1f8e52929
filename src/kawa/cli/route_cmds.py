"""``kawa routes apply|list|show|delete|run`` and ``kawa replay``: data routes from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kawa.cli.app import app, console, get_config
from kawa.cli.signals import stop_on_signals

routes_app = typer.Typer(help="Data routes: apply, list, show, delete, run.", no_args_is_help=True)
app.add_typer(routes_app, name="routes")


@routes_app.command("apply")
def routes_apply(file: Annotated[Path, typer.Argument(help="routes YAML file")]) -> None:
    """Validate the routes in FILE and store them; `kawa up` starts, restarts or keeps each one."""
    from kawa.errors import InvalidRoute
    from kawa.routes.registry import RouteRegistry
    from kawa.routes.runner import validate_route
    from kawa.routes.spec import load_routes

    if not file.is_file():
        raise InvalidRoute(f"{file} does not exist")
    specs = load_routes(file.read_text(), str(file))
    if not specs:
        raise InvalidRoute(f"{file} holds no routes; write routes: [{{id, from, steps, to}}, ...]")
    for spec in specs:
        validate_route(spec, str(file))
    registry = RouteRegistry.for_home(get_config().home)
    for route_id, outcome in registry.apply(specs):
        console.print(f"route [bold]{route_id}[/] {outcome}", highlight=False)


@routes_app.command("list")
def routes_list(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List registered routes with their last reported state."""
    from rich.table import Table

    from kawa.routes.registry import RouteRegistry

    config = get_config()
    snapshot = RouteRegistry.for_home(config.home).snapshot()
    rows = []
    for route_id, (_, spec, error) in snapshot.items():
        status_file = config.path("routes", "status", f"{route_id}.json")
        status = json.loads(status_file.read_text()) if status_file.is_file() else {}
        rows.append(
            {
                "id": route_id,
                "from": spec.from_.uri if spec else "",
                "steps": [next(iter(s)) if isinstance(s, dict) else str(s) for s in spec.steps] if spec else [],
                "to": [e.uri for e in spec.to] if spec else [],
                "standalone": bool(spec and spec.standalone),
                "state": error or status.get("state", "registered"),
                "delivered": status.get("delivered", 0),
                "dead_lettered": status.get("dead_lettered", 0),
            }
        )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "from", "steps", "to", "state", "delivered", "dead letters")
    for row in rows:
        table.add_row(
            row["id"], row["from"], " → ".join(row["steps"]), ", ".join(row["to"]), str(row["state"]),
            str(row["delivered"]), str(row["dead_lettered"]),
        )  # fmt: skip
    console.print(table)


@routes_app.command("show")
def routes_show(route_id: str) -> None:
    """Print a registered route as YAML."""
    import yaml

    from kawa.routes.registry import RouteRegistry

    spec = RouteRegistry.for_home(get_config().home).get(route_id)
    console.print(yaml.safe_dump(spec.to_dict(), sort_keys=False), highlight=False, markup=False)


@routes_app.command("delete")
def routes_delete(route_id: str) -> None:
    """Remove a route; `kawa up` stops it (the other routes are not touched). Progress is kept."""
    from kawa.routes.registry import RouteRegistry

    RouteRegistry.for_home(get_config().home).delete(route_id)
    console.print(f"route [bold]{route_id}[/] deleted", highlight=False)


@routes_app.command("run")
def routes_run(
    route_id: str,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="take the route from this YAML file")] = None,
) -> None:
    """Run one route alone in this process (a route worker) until Ctrl-C or SIGTERM.

    Registered routes marked `standalone: true` are run only this way; others may also run under `kawa up`
    (topic sources then share partitions; file, sql, replay and timer sources hold a lock, so the second
    runner stands by)."""
    import logging

    from kawa.backends import open_backends
    from kawa.errors import RouteNotFound
    from kawa.routes.components.base import RouteContext
    from kawa.routes.progress import ProgressStore
    from kawa.routes.registry import RouteRegistry
    from kawa.routes.runner import validate_route
    from kawa.routes.spec import load_routes
    from kawa.routes.worker import RouteWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = get_config()
    if file is not None:
        matches = [s for s in load_routes(file.read_text(), str(file)) if s.id == route_id]
        if not matches:
            raise RouteNotFound(f"{file} has no route {route_id!r}")
        spec = matches[0]
    else:
        spec = RouteRegistry.for_home(config.home).get(route_id)
    validate_route(spec, str(file or ""))
    progress = ProgressStore(config.path("routes", "progress.db"))
    backends = open_backends(config)
    with stop_on_signals() as stop:
        ctx = RouteContext(route_id=spec.id, config=config, progress=progress, backends=backends, stop=stop)
        console.print(f"[bold green]route {spec.id}[/] running — Ctrl-C to stop", highlight=False)
        try:
            RouteWorker(spec, ctx).run()
        finally:
            backends.close()
            progress.close()
    console.print(f"route {spec.id} stopped")


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file")],
    topic: Annotated[str, typer.Option("--topic", "-t", help="topic to publish to (created when missing)")],
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="column holding each row's event time")
    ] = None,
    speed: Annotated[
        float | None, typer.Option("--speed", help="event-time speed-up (60 = an hour per minute)")
    ] = None,
    max_rate: Annotated[float | None, typer.Option("--max-rate", help="at most this many rows per second")] = None,
    asap: Annotated[bool, typer.Option("--asap", help="as fast as possible (no pacing)")] = False,
    key_column: Annotated[str | None, typer.Option("--key-column", help="column used as the record key")] = None,
    partitions: Annotated[int, typer.Option(help="partitions when the topic is created")] = 1,
    event_type: Annotated[str, typer.Option("--type", help="CloudEvent type")] = "kawa.replay.row",
) -> None:
    """Publish FILE's rows to TOPIC as CloudEvents, paced by event time (batch → stream)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kawa.errors import InvalidRoute
    from kawa.log import open_log
    from kawa.log.base import TopicSpec
    from kawa.routes.replay import count_rows, file_format, publish_file

    if asap and (speed is not None or max_rate is not None):
        raise InvalidRoute("--asap excludes --speed and --max-rate")
    file_format(file)
    if not file.is_file():
        raise InvalidRoute(f"{file} does not exist")
    if speed is None and max_rate is None and not asap and time_column:
        speed = 1.0  # real time by default when rows carry event times
    config = get_config()
    event_log = open_log(config.log.uri, config)
    producer = None
    try:
        event_log.create_topic(TopicSpec(topic, partitions=partitions), exist_ok=True)
        producer = event_log.producer()
        total = count_rows(file)
        columns = [TextColumn("[bold]replay[/] {task.description}"), BarColumn(), MofNCompleteColumn()]
        with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task(f"{file.name} → {topic}", total=total)
            result = publish_file(
                file, producer, topic, time_column=time_column, key_column=key_column,
                speed=None if asap else speed, max_rate=None if asap else max_rate, event_type=event_type,
                on_row=lambda index: bar.update(task, completed=index + 1),
            )  # fmt: skip
    finally:
        if producer is not None:
            producer.close()
        event_log.close()
    console.print(
        f"published {result.published} rows to [bold]{topic}[/] in {result.wall_s:.1f}s"
        + (f"; skipped {result.bad_rows} undecodable rows" if result.bad_rows else ""),
        highlight=False,
    )
