"""``kawa demo``: guided runs that show the platform working on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from kawa.cli.app import app, console, get_config

demo_app = typer.Typer(help="Run a demo of the platform on this machine.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


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
                "dev.kawa.demo.reading", "/demo/sensors", {"sensor": i % 16, "value": i * 0.5},
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
