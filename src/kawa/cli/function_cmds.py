"""``kawa worker``, ``kawa serve-function``, ``kawa deploy knative``, ``kawa functions list``.

Everything heavy (the host, starlette, uvicorn, the app module) is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kawa.cli.app import app, console, err_console, get_config
from kawa.cli.signals import stop_on_signals

functions_app = typer.Typer(help="Inspect an app's functions.", no_args_is_help=True)
app.add_typer(functions_app, name="functions")
deploy_app = typer.Typer(help="Render (and apply) deployments of an app's functions.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")


@app.command()
def worker(
    app_ref: Annotated[
        list[str] | None, typer.Option("--app", help="module:app whose functions to run (repeatable)")
    ] = None,
    function: Annotated[
        list[str] | None, typer.Option("--function", "-f", help="run only this function (repeatable)")
    ] = None,
    stats_interval: Annotated[
        float, typer.Option(help="log each function's metrics every this many seconds (0 = never)")
    ] = 0.0,
    drain_timeout: Annotated[float, typer.Option(help="seconds to let running invocations finish on stop")] = 30.0,
    session_timeout_ms: Annotated[
        int | None, typer.Option(help="consumer-group session timeout (default: the log backend's)")
    ] = None,
    route: Annotated[
        str | None, typer.Option("--route", help="run this data route alone instead of functions (see kawa routes)")
    ] = None,
    route_file: Annotated[
        Path | None, typer.Option("--route-file", help="with --route: take the route from this YAML file")
    ] = None,
    monitor: Annotated[
        bool, typer.Option("--monitor", help="monitor decisions in group kawa-monitor, partitions by model")
    ] = False,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="with --monitor: only this model (repeatable; default all)")
    ] = None,
    pane: Annotated[float, typer.Option("--pane", help="with --monitor: window pane, seconds")] = 300.0,
    panes: Annotated[int, typer.Option("--panes", help="with --monitor: panes per sliding window")] = 4,
    window_size: Annotated[int, typer.Option("--window-size", help="with --monitor: records a window needs")] = 500,
    window_arl0: Annotated[
        float, typer.Option("--window-arl0", help="with --monitor: stationary windows per false alarm")
    ] = 1000.0,
    sequential_arl0: Annotated[
        float, typer.Option("--sequential-arl0", help="with --monitor: records per CUSUM false alarm (0: none)")
    ] = 1_000_000.0,
    horizon: Annotated[
        float, typer.Option("--horizon", help="with --monitor: join outcomes within this many seconds (0: no join)")
    ] = 0.0,
    alerts_topic: Annotated[
        str, typer.Option("--alerts-topic", help="with --monitor: where the events are written")
    ] = "kawa.monitor.alerts",
    decisions_topic: Annotated[
        str, typer.Option("--decisions-topic", help="with --monitor: the decision records' topic")
    ] = "decisions",
    group: Annotated[str, typer.Option("--group", help="with --monitor: the consumer group")] = "kawa-monitor",
) -> None:
    """Run functions as a member of their consumer groups on the configured log (e.g. --log kafka://h:9092),
    with --route one data route as its own worker process, or with --monitor the models' monitors.

    Start more workers for more parallelism: the topic's partitions are shared among them."""
    import json
    import logging

    from kawa.errors import KawaError

    if monitor:
        if app_ref or route is not None:
            raise KawaError("kawa worker --monitor runs the monitor alone: drop --app/--route (start another worker)")
        from kawa.cli.monitor_cmds import monitor_worker
        from kawa.monitor.join import JoinConfig
        from kawa.monitor.service import MonitorConfig

        settings = MonitorConfig(
            "*", pane_s=pane, panes=panes, window_size=window_size, window_arl0=window_arl0,
            sequential_arl0=sequential_arl0 or None, join=JoinConfig(horizon) if horizon > 0 else None,
            alerts_topic=alerts_topic, decisions_topic=decisions_topic,
        )  # fmt: skip
        with stop_on_signals() as stop:
            monitor_worker(model or [], settings=settings, group=group, session_timeout_ms=session_timeout_ms,
                           stop=stop)  # fmt: skip
        return
    if route is not None:
        if app_ref:
            raise KawaError("give either --app (functions) or --route (a data route) to one kawa worker, not both")
        from kawa.cli.route_cmds import routes_run

        routes_run(route, route_file)
        return
    if not app_ref:
        raise KawaError("kawa worker needs --app module:app (functions) or --route ID (a data route)")

    from kawa.backends import open_backends
    from kawa.functions.app import load_app
    from kawa.functions.host import FunctionHost, HostOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = get_config()
    apps = [load_app(ref) for ref in app_ref]
    backends = open_backends(config)
    host = FunctionHost(
        apps, log=backends.log, config=config, functions=function or None, store_factory=lambda: backends.store,
        options=HostOptions(drain_timeout_s=drain_timeout, session_timeout_ms=session_timeout_ms),
    )
    with stop_on_signals() as stop:
        try:
            host.start()
            names = ", ".join(host.runners)
            typer.echo(f"kawa worker ready: {names} on {config.log.uri}", err=True)
            while not stop.wait(stats_interval or 0.5):
                if stats_interval:
                    for stats in host.metrics().values():
                        logging.getLogger("kawa.worker").info("stats %s", json.dumps(stats.to_dict()))
        finally:
            host.stop()
            backends.close()
            typer.echo("kawa worker stopped", err=True)


@app.command("serve-function")
def serve_function(
    app_ref: Annotated[str, typer.Argument(help="module:app")],
    name: Annotated[str, typer.Argument(help="the function to serve")],
    host: Annotated[str, typer.Option(help="interface to bind")] = "0.0.0.0",
    port: Annotated[int, typer.Option(envvar="PORT", help="port (Knative sets $PORT)")] = 8080,
    accept_filtered: Annotated[
        bool, typer.Option("--accept-filtered", help="answer 202 instead of 422 for events the filter rejects")
    ] = False,
) -> None:
    """Serve one function as a CloudEvents HTTP endpoint (binary and structured mode), as Knative runs it."""
    from kawa.backends import open_backends
    from kawa.functions.app import load_app
    from kawa.functions.context import Runtime
    from kawa.functions.dedupe import open_dedupe
    from kawa.functions.http import serve

    config = get_config()
    loaded = load_app(app_ref)
    backends = open_backends(config)
    runtime = Runtime(
        loaded.get(name), backends=backends, dedupe=open_dedupe(config.functions.dedupe, config),
        app_config=loaded.config,
    )
    try:
        serve(runtime, host=host, port=port, accept_filtered=accept_filtered)
    finally:
        backends.close()


@deploy_app.command("knative")
def deploy_knative(
    app_ref: Annotated[str, typer.Argument(help="module:app")],
    output: Annotated[Path, typer.Option("--output", "-o", help="directory for the manifests")] = Path("deploy"),
    image: Annotated[str | None, typer.Option(help="container image (default: <app>:latest)")] = None,
    bootstrap_servers: Annotated[
        list[str] | None, typer.Option("--bootstrap-servers", help="Kafka bootstrap host:port (repeatable)")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubernetes namespace")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="kubectl apply the rendered manifests")] = False,
) -> None:
    """Render a Knative Service, KafkaSource and dead-letter KafkaSink per function, plus a Containerfile."""
    from kawa.functions import knative
    from kawa.functions.app import load_app

    loaded = load_app(app_ref)
    servers: list[str] = []
    for item in bootstrap_servers or []:
        servers.extend(s.strip() for s in item.split(",") if s.strip())
    if not servers:
        config = get_config()
        if config.log.uri.startswith("kafka://"):
            servers = [s for s in config.log.uri[len("kafka://") :].split(",") if s]
    options = knative.KnativeOptions(
        app_ref=app_ref, image=image or f"{loaded.name}:latest", namespace=namespace,
        bootstrap_servers=tuple(servers) or knative.KnativeOptions.bootstrap_servers,
    )
    rendered = knative.render(loaded, options)
    for warning in rendered.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    paths = knative.write(rendered, output)
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    if apply:
        console.print(knative.apply(paths), highlight=False)


@functions_app.command("list")
def functions_list(app_ref: Annotated[list[str], typer.Option("--app", help="module:app (repeatable)")]) -> None:
    """Show each function's trigger, filter and runtime settings."""
    from rich.table import Table

    from kawa.functions.app import load_app

    table = Table("function", "trigger", "filter", "concurrency", "scale", "retries", "reply", "dead letters")
    for ref in app_ref:
        for spec in load_app(ref).functions.values():
            trigger = f"bucket {spec.bucket} → {spec.topic}" if spec.bucket else f"topic {spec.topic}"
            table.add_row(
                spec.qualified_name, trigger, str(spec.filter.spec or "-"), str(spec.concurrency),
                f"{spec.min_scale}..{spec.max_scale or '∞'}", str(spec.retries), spec.reply_topic or "-",
                spec.dead_letter_topic,
            )
    console.print(table)
