"""``kawa monitor status|profile|run`` and ``kawa outcomes send``: monitoring from the shell (docs/monitoring.md)."""

from __future__ import annotations

import json
import math
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kawa.cli.app import app, console, err_console, get_config

if TYPE_CHECKING:
    from kawa.monitor.service import MonitorConfig
    from kawa.monitor.sketch import Profile
    from kawa.monitor.status import ModelStatus

monitor_app = typer.Typer(help="Watch a model's decisions: drift alerts, matured performance, reference profiles.",
                          no_args_is_help=True)  # fmt: skip
outcomes_app = typer.Typer(help="Send outcomes (the truth that arrives later) for monitoring to join.",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(monitor_app, name="monitor")
app.add_typer(outcomes_app, name="outcomes")

AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
AlertsTopic = Annotated[str, typer.Option("--alerts-topic", help="where the monitor writes its events")]


def _time(text: str | None, what: str) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 time (a time without zone is UTC)."""
    from kawa.errors import KawaError

    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise KawaError(f"{what} {text!r} is neither seconds since the epoch nor an ISO 8601 time") from None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@monitor_app.command("status")
def status(model: str, as_json: AsJson = False, alerts_topic: AlertsTopic = "kawa.monitor.alerts") -> None:
    """Latest alerts per version, the drift table of the last window, matured performance if any."""
    from kawa.log import open_log
    from kawa.monitor.status import read_events
    from kawa.monitor.status import status as fold

    config = get_config()
    log = open_log(config.log.uri, config)
    try:
        found = fold(read_events(log, alerts_topic), model)
    finally:
        log.close()
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    _print_status(found)


def _print_status(found: ModelStatus) -> None:
    from rich.table import Table

    if not found.versions:
        console.print(f"no monitoring events for {found.model}; start the monitor: `kawa monitor run {found.model}`")
        return
    for version, v in sorted(found.versions.items()):
        console.print(f"[bold]{found.model} version {version}[/]: {len(v.open_alerts)} open alert(s), "
                      f"{len(v.alerts)} raised, {v.resolved} resolved")  # fmt: skip
        for e in v.alerts[-5:]:
            state = "open" if e.id in v.open_alerts else "resolved"
            window = e.data.get("window") or {}
            console.print(f"  alert ({e.data.get('detector')}, {state}) on {', '.join(e.data.get('features', []))} "
                          f"window {_fmt(window.get('start'), 0)}..{_fmt(window.get('end'), 0)}")  # fmt: skip
        if v.last_window is not None:
            w = v.last_window.data
            table = Table(
                "feature",
                "psi",
                "js",
                "ks",
                "norm. W1",
                "chi2 p",
                "missing",
                "n",
                title=(
                    f"last window {_fmt(w['window']['start'], 0)}..{_fmt(w['window']['end'], 0)} ({w['n']} records)"
                ),
            )
            for name, row in w["drift"].items():
                table.add_row(name, _fmt(row["psi"]), _fmt(row["js"]), _fmt(row["ks"]),
                              _fmt(row["normed_wasserstein"]), _fmt(row["chi2_p"], 4), _fmt(row["missing_share"]),
                              str(row["n_live"]))  # fmt: skip
            console.print(table)
        if v.performance is not None:
            p = v.performance.data
            metrics = p["metrics"]
            auroc = metrics["auroc"]
            console.print(f"  matured cohort from {_fmt(p['cohort']['start'], 0)}: n={p['n']}, AUROC "
                          f"{_fmt(auroc['estimate'])} [{_fmt(auroc['low'])}, {_fmt(auroc['high'])}], Brier "
                          f"{_fmt(metrics['brier']['estimate'])}, ECE {_fmt(p['ece'])}")  # fmt: skip
            gap = p.get("label_free")
            if gap:
                console.print(f"  label-free estimate of {gap['n']} pending decisions: AUROC {_fmt(gap['auroc'])} "
                              "(assumes no concept drift)")  # fmt: skip


@monitor_app.command("profile")
def profile(ref: Annotated[str, typer.Argument(help="MODEL@VERSION or MODEL@ALIAS")], as_json: AsJson = False) -> None:
    """The reference profile a model version was trained with: per feature its kind, bins and missing share."""
    from kawa.ml.refs import parse_ref
    from kawa.ml.registry import Registry
    from kawa.monitor.profiles import load_reference_profile

    name, _, tail = ref.rpartition("@")
    registry = Registry(get_config(), publish=False)
    try:
        version = int(tail) if name and tail.isdigit() else registry.resolve(parse_ref(ref))
        name = name if name and tail.isdigit() else parse_ref(ref).name
        found = load_reference_profile(registry, name, version)
    finally:
        registry.close()
    rows = _profile_rows(found)
    if as_json:
        typer.echo(json.dumps({"model": name, "version": version, "n": found.n, "features": rows}, indent=2))
        return
    from rich.table import Table

    table = Table(
        "feature",
        "kind",
        "bins",
        "range / top categories",
        "missing",
        title=(f"{name} version {version}: reference profile of {found.n} records"),
    )
    for row in rows:
        table.add_row(row["name"], row["kind"], str(row["bins"]), row["summary"], _fmt(row["missing_share"]))
    console.print(table)


def _profile_rows(found: Profile) -> list[dict[str, Any]]:
    from kawa.monitor.calibrate import SCORE
    from kawa.monitor.sketch import NumericSketch

    rows = []
    items = [*found.features.items(), *([(SCORE, found.score)] if found.score is not None else [])]
    for name, sketch in items:
        if isinstance(sketch, NumericSketch):
            summary = f"{sketch.positions[0]:.4g} .. {sketch.positions[-1]:.4g} (sd {sketch.scale:.4g})"
        else:
            summary = ", ".join(sketch.categories[:5]) + (" ..." if len(sketch.categories) > 5 else "")
        rows.append({"name": name, "kind": sketch.kind, "bins": len(sketch.counts), "summary": summary,
                     "missing_share": sketch.missing / sketch.total if sketch.total else 0.0})  # fmt: skip
    return rows


@monitor_app.command("run")
def run(
    model: str,
    once: Annotated[bool, typer.Option("--once", help="replay and process what the log holds now, then exit")] = False,
    pane: Annotated[float, typer.Option("--pane", help="window pane, seconds (windows slide by one pane)")] = 300.0,
    panes: Annotated[int, typer.Option("--panes", help="panes per sliding window (1: tumbling)")] = 4,
    window_size: Annotated[int, typer.Option("--window-size", help="records a window needs to be tested")] = 500,
    window_arl0: Annotated[float, typer.Option("--window-arl0", help="stationary windows per false alarm")] = 1000.0,
    sequential_arl0: Annotated[
        float,
        typer.Option(
            "--sequential-arl0", help="stationary records per false alarm of the CUSUMs (0: no sequential detector)"
        ),
    ] = 1_000_000.0,
    horizon: Annotated[
        float, typer.Option("--horizon", help="join outcomes within this many seconds (0: no join)")
    ] = 0.0,
    by: Annotated[str, typer.Option("--by", help="join outcomes by 'ref' (EventRef) or 'entity'")] = "ref",
    grace: Annotated[float, typer.Option("--grace", help="seconds more to wait for an outcome")] = 0.0,
    interval: Annotated[float, typer.Option("--interval", help="seconds between steps")] = 1.0,
    alerts_topic: AlertsTopic = "kawa.monitor.alerts",
) -> None:
    """Monitor MODEL: replay its decisions, then raise drift alerts (and performance, with --horizon) as they come."""

    from kawa.log import open_log
    from kawa.ml.registry import Registry
    from kawa.monitor.join import JoinConfig
    from kawa.monitor.profiles import NoReferenceProfile, load_reference_profile
    from kawa.monitor.service import MonitorConfig, MonitorService

    config = get_config()
    registry = Registry(config, publish=False)

    def profiles(version: int) -> Profile | None:
        try:
            return load_reference_profile(registry, model, version)
        except NoReferenceProfile as exc:
            err_console.print(f"[yellow]warning:[/] {exc}; its decisions are counted, not tested", highlight=False)
            return None

    join = JoinConfig(horizon, by=by, grace=grace) if horizon > 0 else None  # type: ignore[arg-type]
    settings = MonitorConfig(
        model, pane_s=pane, panes=panes, window_size=window_size, window_arl0=window_arl0,
        sequential_arl0=sequential_arl0 or None, join=join, alerts_topic=alerts_topic,
    )  # fmt: skip
    log = open_log(config.log.uri, config)
    service = MonitorService(log, settings, profiles).start()

    def show(events: list[Any]) -> None:
        for e in events:
            if e.type in ("kawa.monitor.alert", "kawa.monitor.resolved"):
                what = "alert" if e.type.endswith("alert") else "resolved"
                console.print(f"{what}: {model} version {e.version} ({e.data.get('detector')}) "
                              f"{', '.join(e.data.get('features', []))}")  # fmt: skip

    try:
        if once:
            show(service.step())
        else:
            stop = threading.Event()
            try:
                service.run(stop, interval_s=interval, on_events=show)
            except KeyboardInterrupt:
                stop.set()
        unprofiled = sum(service.core.unprofiled.values())
        extra = f", {unprofiled} without a reference profile" if unprofiled else ""
        console.print(f"{service.core.records} decision(s) of {model} read, {service.emitted} event(s) written to "
                      f"{alerts_topic}{extra}")  # fmt: skip
    finally:
        service.close()
        registry.close()
        log.close()


@outcomes_app.command("send")
def send(
    ref: Annotated[str | None, typer.Option("--ref", help="the decision's event, SOURCE/ID")] = None,
    entity: Annotated[str | None, typer.Option("--entity", help="the entity key (instead of --ref)")] = None,
    at: Annotated[str | None, typer.Option("--at", help="when the outcome happened (with --entity)")] = None,
    label: Annotated[int | None, typer.Option("--label", help="0 or 1")] = None,
    value: Annotated[float | None, typer.Option("--value", help="a numeric outcome (instead of --label)")] = None,
    observed_at: Annotated[str | None, typer.Option("--observed-at", help="when it became known (default now)")] = None,
    id: Annotated[str | None, typer.Option("--id", help="the outcome source's own id (dedupes resends)")] = None,
    topic: Annotated[str, typer.Option("--topic", help="the outcomes topic")] = "outcomes",
) -> None:
    """Write one outcome event (times: seconds since the epoch or ISO 8601)."""
    import time

    from kawa.errors import KawaError
    from kawa.events.ref import EventRef
    from kawa.log import open_log
    from kawa.log.base import TopicSpec
    from kawa.monitor.outcomes import publish
    from kawa.monitor.records import OutcomeEvent

    if (ref is None) == (entity is None):
        raise KawaError("name the decision with --ref SOURCE/ID or the entity with --entity KEY (one of them)")
    if (label is None) == (value is None):
        raise KawaError("give the outcome as --label 0|1 or as --value V (one of them)")
    event_ref = None
    if ref is not None:
        source, sep, ident = ref.rpartition("/")
        if not sep or not source or not ident:
            raise KawaError(f"--ref {ref!r} is not SOURCE/ID (the decision's CloudEvent source, a slash, its id)")
        event_ref = EventRef(source, ident)
    observed = _time(observed_at, "--observed-at")
    outcome = OutcomeEvent(observed if observed is not None else time.time(), ref=event_ref, entity=entity,
                           at=_time(at, "--at"), label=label, value=value, id=id)  # fmt: skip
    config = get_config()
    log = open_log(config.log.uri, config)
    try:
        log.create_topic(TopicSpec(topic, 1, retention_ms=None), exist_ok=True)
        producer = log.producer()
        try:
            meta = publish(producer, topic, outcome.to_event("kawa://cli/outcomes", id=id))
        finally:
            producer.close()
    finally:
        log.close()
    target = f"event {event_ref.source}/{event_ref.id}" if event_ref else f"entity {entity}"
    what = f"label {label}" if label is not None else f"value {value}"
    console.print(f"outcome for {target}: {what}, written to {topic} "
                  f"(partition {meta.partition}, offset {meta.offset})")  # fmt: skip


def monitor_worker(
    models: list[str], *, settings: MonitorConfig, group: str, session_timeout_ms: int | None, stop: threading.Event
) -> None:
    """``kawa worker --monitor``: one member of the ``kawa-monitor`` consumer group on the decisions topic,
    monitoring the models of the partitions it holds (:mod:`kawa.monitor.worker`) until ``stop`` is set."""
    import logging

    from kawa.errors import ModelNotFound
    from kawa.log import open_log
    from kawa.ml.registry import Registry
    from kawa.monitor.profiles import NoReferenceProfile, load_reference_profile
    from kawa.monitor.worker import MonitorWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = get_config()
    registry = Registry(config, publish=False)

    def profiles(model: str, version: int) -> Profile | None:
        try:
            return load_reference_profile(registry, model, version)
        except (NoReferenceProfile, ModelNotFound) as exc:
            err_console.print(f"[yellow]warning:[/] {exc}; its decisions are counted, not tested", highlight=False)
            return None

    def show(events: list[Any]) -> None:
        for e in events:
            if e.type in ("kawa.monitor.alert", "kawa.monitor.resolved"):
                what = "alert" if e.type.endswith("alert") else "resolved"
                console.print(f"{what}: {e.model} version {e.version} ({e.data.get('detector')}) "
                              f"{', '.join(e.data.get('features', []))}")  # fmt: skip

    log = open_log(config.log.uri, config)
    worker = MonitorWorker(log, settings, profiles, models=models or None, group=group,
                           session_timeout_ms=session_timeout_ms)  # fmt: skip
    try:
        worker.start()
        watched = ", ".join(models) if models else "every model with decisions"
        typer.echo(f"kawa worker ready: monitoring {watched} in group {group} on {settings.decisions_topic} "
                   f"({config.log.uri})", err=True)  # fmt: skip
        worker.run(stop, on_events=show)
        console.print(f"{worker.records} decision(s) read, {worker.emitted} event(s) written to "
                      f"{settings.alerts_topic}")  # fmt: skip
    finally:
        worker.close()
        registry.close()
        log.close()
