"""``kawa topics|produce|consume|lag``: the event log from the shell."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from kawa.log.base import EventLog

topics_app = typer.Typer(help="Create, list, describe and delete topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


def _open() -> EventLog:
    """The log as the shell's user may use it (``KAWA_USER``; unset: the home's owner; see
    :func:`kawa.projects.scoped.cli_scope`)."""
    from kawa.log import open_log
    from kawa.projects.scoped import ScopedLog, cli_scope

    config = get_config()
    scope = cli_scope(config, os.environ.get("KAWA_USER") or None)
    return ScopedLog(open_log(config.log.uri, config), scope, owns=True)  # type: ignore[return-value]


@topics_app.command("list")
def topics_list() -> None:
    """List topics."""
    log = _open()
    try:
        for name in log.list_topics():
            console.print(name, highlight=False)
    finally:
        log.close()


@topics_app.command("create")
def topics_create(
    name: str,
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="number of partitions")] = 1,
    retention_ms: Annotated[int | None, typer.Option(help="keep records this long (default 7 days)")] = None,
    retention_bytes: Annotated[int | None, typer.Option(help="keep at most this many bytes per partition")] = None,
    cleanup_policy: Annotated[str, typer.Option(help="delete | compact | compact,delete")] = "delete",
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="no error when the topic exists")] = False,
) -> None:
    """Create a topic."""
    from kawa.log.base import DEFAULT_RETENTION_MS, TopicSpec

    spec = TopicSpec(
        name,
        partitions=partitions,
        retention_ms=retention_ms or DEFAULT_RETENTION_MS,
        retention_bytes=retention_bytes,
        cleanup_policy=cleanup_policy,  # type: ignore[arg-type]  # validated by TopicSpec
    )
    log = _open()
    try:
        log.create_topic(spec, exist_ok=exist_ok)
    finally:
        log.close()
    console.print(f"created topic [bold]{name}[/] with {partitions} partition(s)")


@topics_app.command("describe")
def topics_describe(name: str) -> None:
    """Show a topic's settings and per-partition offsets."""
    from rich.table import Table

    log = _open()
    try:
        info = log.describe_topic(name)
    finally:
        log.close()
    retention = "unlimited" if info.retention_ms is None else f"{info.retention_ms} ms"
    console.print(
        f"[bold]{info.name}[/]  partitions={info.partition_count}  cleanup={info.cleanup_policy}  "
        f"retention={retention}  retention_bytes={info.retention_bytes or 'unlimited'}"
    )
    table = Table("partition", "start offset", "end offset", "records")
    for p in info.partitions:
        table.add_row(str(p.partition), str(p.start_offset), str(p.end_offset), str(p.end_offset - p.start_offset))
    console.print(table)


@topics_app.command("delete")
def topics_delete(name: str) -> None:
    """Delete a topic and its records."""
    log = _open()
    try:
        log.delete_topic(name)
    finally:
        log.close()
    console.print(f"deleted topic [bold]{name}[/]")


@app.command()
def produce(
    topic: str,
    key: Annotated[str | None, typer.Option("--key", "-k", help="key for every record")] = None,
    partition: Annotated[int | None, typer.Option(help="write to this partition")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="NAME=VALUE, repeatable")] = None,
    create: Annotated[bool, typer.Option(help="create the topic (1 partition) if it does not exist")] = True,
) -> None:
    """Write one record per line of standard input to TOPIC."""
    from kawa.errors import KawaError, TopicNotFound
    from kawa.log.base import TopicSpec

    headers: list[tuple[str, bytes]] = []
    for item in header or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise KawaError(f"--header {item!r} must look like NAME=VALUE")
        headers.append((name, value.encode()))
    log = _open()
    count = 0
    try:
        if create:
            try:
                log.describe_topic(topic)
            except TopicNotFound:
                log.create_topic(TopicSpec(topic), exist_ok=True)
        producer = log.producer()
        key_bytes = key.encode() if key is not None else None
        for line in sys.stdin.buffer:
            producer.produce(topic, line.rstrip(b"\r\n"), key=key_bytes, headers=headers, partition=partition)
            count += 1
        producer.close()
    finally:
        log.close()
    typer.echo(f"produced {count} record(s) to {topic}", err=True)


@app.command()
def consume(
    topic: str,
    group: Annotated[str, typer.Option("--group", "-g", help="consumer group")] = "kawa-cli",
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="start at the earliest record when the group has no offset")
    ] = False,
    from_time: Annotated[
        str | None, typer.Option("--from-time", help="start at the first record at/after this ISO-8601 time")
    ] = None,
    max_records: Annotated[int | None, typer.Option("--max", help="stop after this many records")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="stop after this many seconds without a record (default: wait forever)")
    ] = None,
    show: Annotated[str, typer.Option(help="value | full (partition, offset, key, headers, value)")] = "value",
) -> None:
    """Print records of TOPIC as a member of GROUP, committing what was printed."""
    import time

    log = _open()
    try:
        consumer = log.consumer(group, [topic], auto_offset_reset="earliest" if from_beginning else "latest")
        try:
            if from_time is not None:
                try:
                    when = datetime.fromisoformat(from_time.replace("Z", "+00:00"))
                except ValueError as exc:
                    raise typer.BadParameter(f"--from-time {from_time!r} is not an ISO-8601 time") from exc
                if when.tzinfo is None:
                    when = when.astimezone()
                _wait_for_assignment(consumer)
                consumer.seek_to_time(int(when.timestamp() * 1000))
            seen = 0
            last = time.monotonic()
            while max_records is None or seen < max_records:
                want = 500 if max_records is None else min(500, max_records - seen)
                records = consumer.poll(timeout=0.5, max_records=want)
                if not records:
                    if timeout is not None and time.monotonic() - last > timeout:
                        break
                    continue
                last = time.monotonic()
                out = sys.stdout.buffer
                for record in records:
                    if show == "full":
                        heads = ",".join(f"{k}={v.decode(errors='replace')}" for k, v in record.headers)
                        key = record.key.decode(errors="replace") if record.key is not None else ""
                        out.write(f"{record.partition}\t{record.offset}\t{key}\t{heads}\t".encode())
                    out.write((record.value or b"") + b"\n")
                out.flush()
                seen += len(records)
                consumer.commit({tp: off for tp, off in _next_offsets(records).items()})
        finally:
            consumer.close()
    finally:
        log.close()


def _next_offsets(records: list) -> dict:  # type: ignore[type-arg]
    from kawa.log.base import TopicPartition

    offsets: dict[TopicPartition, int] = {}
    for record in records:
        offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
    return offsets


def _wait_for_assignment(consumer: object, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        consumer.poll(timeout=0.1, max_records=0)  # type: ignore[attr-defined]


@app.command()
def lag(
    group: Annotated[str, typer.Option("--group", "-g", help="consumer group")],
    topic: Annotated[list[str] | None, typer.Option("--topic", "-t", help="limit to these topics")] = None,
) -> None:
    """Show committed offset, end offset and lag per partition for GROUP."""
    from rich.table import Table

    log = _open()
    try:
        rows = log.lag(group, topic or None)
    finally:
        log.close()
    table = Table("topic", "partition", "committed", "end offset", "lag")
    for row in rows:
        committed = "-" if row.committed is None else str(row.committed)
        table.add_row(row.topic, str(row.partition), committed, str(row.end_offset), str(row.lag))
    console.print(table)
    console.print(f"total lag: [bold]{sum(r.lag for r in rows)}[/]")
