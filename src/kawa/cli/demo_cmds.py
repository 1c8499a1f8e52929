"""``kawa demo``: guided runs that show the platform working on this machine.

``kawa demo log`` streams events through the event log. ``kawa demo <app>`` runs the demo an installed app
declares (:class:`~kawa.apps.plugin.AppPlugin` ``demo``), with the options every demo shares; one command
per installed app, listed without importing any app's code.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from kawa.apps.plugin import DemoOptions
    from kawa.config import KawaConfig

demo_app = typer.Typer(
    help="Run a demo of the platform, or of an installed app, on this machine.", no_args_is_help=True
)
app.add_typer(demo_app, name="demo")


def _app_command(name: str) -> Callable[..., None]:
    """The ``kawa demo NAME`` command: the options every app's demo shares."""

    def command(
        rate: Annotated[
            float | None, typer.Option(help="inputs (images, records …) per second; default: the app's")
        ] = None,
        duration: Annotated[
            float, typer.Option("--duration", "--seconds", help="seconds to send inputs for (0: until Ctrl-C)")
        ] = 0.0,
        count: Annotated[int | None, typer.Option("--count", "--images", help="send at most this many inputs")] = None,
        backend: Annotated[str, typer.Option(help="event log: embedded (on disk) or kafka")] = "embedded",
        kafka: Annotated[
            str | None,
            typer.Option(
                help="Kafka bootstrap host:port (default: the configured kafka:// log, else a "
                "local broker started with scripts/kafka.sh)"
            ),
        ] = None,
        settings_file: Annotated[
            Path | None,
            typer.Option("--settings", help="YAML with the app's settings (a mapping, or under the app's name)"),
        ] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="KEY=VALUE: one of the app's settings (repeatable)")
        ] = None,
        corrupt: Annotated[
            float | None, typer.Option(help="share of damaged inputs, to show dead-lettering (default: the app's)")
        ] = None,
        train_count: Annotated[
            int | None,
            typer.Option("--train-count", "--train-images", help="inputs to train on when no model exists"),
        ] = None,
        portal: Annotated[bool, typer.Option(help="serve the portal and print its URL")] = True,
    ) -> None:
        from kawa.apps.plugin import DemoOptions

        options = DemoOptions(
            rate=rate,
            duration=duration,
            count=count,
            corrupt=corrupt,
            train_count=train_count,
            portal=portal,
            settings_file=str(settings_file) if settings_file else None,
            overrides=_settings_pairs(set_ or []),
        )
        code = run_app_demo(name, options, backend=backend, kafka=kafka)
        if code:
            raise typer.Exit(code)

    return command


def _register_app_demos() -> None:
    from kawa.apps.registry import app_names

    for name in app_names():
        if name == "log":  # `kawa demo log` is the platform's own
            continue
        demo_app.command(
            name,
            help=f"Run the {name} app's demo on this machine (its buckets, topics, "
            "functions and routes, inputs at a rate, live counts, a summary).",
        )(_app_command(name))


def _settings_pairs(pairs: list[str]) -> dict[str, Any]:
    import yaml

    from kawa.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: write KEY=VALUE, e.g. --set partitions=8")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def _settings_section(name: str, config: KawaConfig, file: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The app's settings: ``apps.<name>`` of kawa.yaml, then the ``--settings`` file, then ``--set``."""
    import yaml

    from kawa.apps.runtime import section_of
    from kawa.errors import ConfigError

    section = section_of(config, name)
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"settings file {path} does not exist; pass an existing YAML file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of the {name} app's settings")
        inner = loaded.get(name, loaded)
        section.update(inner if isinstance(inner, dict) else loaded)
    section.update(overrides)
    return section


def run_app_demo(name: str, options: DemoOptions, *, backend: str = "embedded", kafka: str | None = None) -> int:
    """Run the demo of the installed app ``name`` on a platform of the configured backends; its exit code."""
    import importlib

    from kawa.apps.plugin import declared
    from kawa.apps.registry import get_app
    from kawa.errors import ConfigError
    from kawa.platform import Platform

    if backend not in ("embedded", "kafka"):
        raise ConfigError(f"--backend must be embedded or kafka, not {backend!r}")
    plugin = get_app(name)
    if plugin.demo is None:
        raise ConfigError(
            f"the {name} app declares no demo; run it with `kawa up` (apps: {{{name}: {{}}}} in kawa.yaml)"
        )
    origin = f"the {name} app's settings ({options.settings_file or 'kawa.yaml'} and --set)"
    app = declared(
        plugin, _settings_section(name, get_config(), options.settings_file, dict(options.overrides)), origin=origin
    )
    module_name, _, attr = plugin.demo.partition(":")
    run: Callable[..., int] = getattr(importlib.import_module(module_name), attr)
    started_broker = False
    overrides: dict[str, Any] = {}
    if backend == "kafka":
        address, started_broker = _kafka_address(kafka, get_config())
        overrides["log"] = {"uri": f"kafka://{address}"}
    try:
        platform = Platform(get_config(**overrides))
        try:
            return int(run(platform, app, options) or 0)
        finally:
            platform.stop()
    finally:
        if started_broker:
            _kafka_script("stop", check=False)


@demo_app.command("log")
def demo_log(
    records: Annotated[int, typer.Option(help="how many events to stream")] = 10_000,
    partitions: Annotated[int, typer.Option(help="partitions of the demo topic")] = 4,
) -> None:
    """Stream CloudEvents through the configured event log and read them back as a consumer group."""
    import time

    from rich.progress import Progress

    from kawa.events import from_record, new_event, to_kafka
    from kawa.log import TopicSpec, open_log

    config = get_config()
    log = open_log(config.log.uri, config)
    topic = "demo.readings"
    log.create_topic(TopicSpec(topic, partitions=partitions), exist_ok=True)
    console.print(f"event log [bold]{log.uri}[/] (home {config.home}) — topic [bold]{topic}[/]")
    producer = log.producer()
    started = time.perf_counter()
    with Progress(console=console) as progress:
        task = progress.add_task("producing CloudEvents", total=records)
        for i in range(records):
            event = new_event(
                "dev.kawa.demo.reading",
                "/demo/sensors",
                {"sensor": i % 16, "value": i * 0.5},
                extensions={"partitionkey": f"sensor-{i % 16}"},
            )
            key, value, headers = to_kafka(event)
            producer.produce(topic, value, key=key, headers=headers)
            if i % 1000 == 999:
                progress.advance(task, 1000)
        producer.flush()
        progress.update(task, completed=records)
        produced_s = time.perf_counter() - started
        consumer = log.consumer("demo-readers", [topic], auto_offset_reset="earliest")
        read = 0
        task2 = progress.add_task("consuming as group demo-readers", total=records)
        sensors: set[int] = set()
        idle = 0
        while read < records and idle < 20:
            batch = consumer.poll(timeout=0.25, max_records=2000)
            idle = 0 if batch else idle + 1
            for record in batch:
                data = from_record(record).get_data()
                if isinstance(data, dict):
                    sensors.add(int(data["sensor"]))
            read += len(batch)
            consumer.commit()
            progress.update(task2, completed=min(read, records))
        consumer.close()
    total_s = time.perf_counter() - started
    lag = sum(row.lag for row in log.lag("demo-readers", [topic]))
    log.close()
    console.print(
        f"produced {records} events in {produced_s:.2f} s, consumed {read} from {len(sensors)} sensors; "
        f"total {total_s:.2f} s; group lag now {lag}"
    )
    console.print(
        "next: [bold]kawa topics describe demo.readings[/], [bold]kawa lag --group demo-readers[/], "
        "[bold]kawa consume demo.readings --from-beginning --max 3[/]"
    )


def _kafka_address(explicit: str | None, config: KawaConfig) -> tuple[str, bool]:
    """The broker to use and whether this command started it."""
    if explicit:
        return explicit.removeprefix("kafka://"), False
    if config.log.uri.startswith("kafka://"):
        return config.log.uri.removeprefix("kafka://"), False
    running = _kafka_script("status", check=False)  # "running pid N KAWA_TEST_KAFKA=host:port"
    if "KAWA_TEST_KAFKA=" in running:  # a broker scripts/kafka.sh started earlier: use it, leave it running
        return running.split("KAWA_TEST_KAFKA=", 1)[1].split()[0], False
    with console.status("starting a local Apache Kafka broker (scripts/kafka.sh; the first run downloads it)"):
        out = _kafka_script("start")
    for line in out.splitlines():
        if line.startswith("KAWA_TEST_KAFKA="):
            return line.split("=", 1)[1].strip(), True
    from kawa.errors import BackendUnavailable

    raise BackendUnavailable("scripts/kafka.sh did not report a broker address; start Kafka and pass --kafka HOST:PORT")


def _kafka_script(action: str, *, check: bool = True) -> str:
    """Run ``scripts/kafka.sh ACTION``; its stdout ('' when ``check`` is off and it failed)."""
    from kawa.errors import BackendUnavailable

    script = Path(__file__).resolve().parents[3] / "scripts" / "kafka.sh"
    if not script.is_file():
        raise BackendUnavailable("no Kafka broker configured: pass --kafka HOST:PORT or set log.uri to kafka://…")
    done = subprocess.run(["bash", str(script), action], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        if not check:
            return ""
        raise BackendUnavailable(
            f"scripts/kafka.sh {action} failed: {done.stderr.strip()[-800:]}; "
            "pass --kafka HOST:PORT to use a running broker"
        )
    return done.stdout


_register_app_demos()
