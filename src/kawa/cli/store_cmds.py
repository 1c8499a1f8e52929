"""``kawa buckets|put|get|ls|rm|notify``: the object store from the shell."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from kawa.store.base import ObjectStore

buckets_app = typer.Typer(help="Create, list and delete buckets.", no_args_is_help=True)
notify_app = typer.Typer(help="Bucket notifications: changes of objects as events on a topic.", no_args_is_help=True)
app.add_typer(buckets_app, name="buckets")
app.add_typer(notify_app, name="notify")


@contextmanager
def _store() -> Iterator[ObjectStore]:
    """The store as the shell's user may use it (``KAWA_USER``; unset: the home's owner; see
    :func:`kawa.projects.scoped.cli_scope`)."""
    from kawa.backends import open_backends
    from kawa.projects.scoped import cli_scope, scoped

    config = get_config()
    scope = cli_scope(config, os.environ.get("KAWA_USER") or None)
    with scoped(open_backends(config), scope) as backends:
        yield backends.store


@buckets_app.command("list")
def buckets_list() -> None:
    """List buckets."""
    with _store() as store:
        for bucket in store.list_buckets():
            console.print(bucket.name, highlight=False)


@buckets_app.command("create")
def buckets_create(
    name: str,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="no error when the bucket exists")] = False,
) -> None:
    """Create a bucket."""
    with _store() as store:
        store.create_bucket(name, exist_ok=exist_ok)
    console.print(f"created bucket [bold]{name}[/]")


@buckets_app.command("delete")
def buckets_delete(name: str) -> None:
    """Delete an empty bucket."""
    with _store() as store:
        store.delete_bucket(name)
    console.print(f"deleted bucket [bold]{name}[/]")


@app.command()
def put(
    bucket: str,
    files: Annotated[list[Path], typer.Argument(help="files to upload; each becomes PREFIX + its file name")],
    prefix: Annotated[str, typer.Option("--prefix", "-p", help="key prefix, e.g. 'scans/2024/'")] = "",
    content_type: Annotated[str | None, typer.Option(help="content type (default: from the extension)")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", "-m", help="user metadata NAME=VALUE, repeatable")] = None,
) -> None:
    """Upload files to BUCKET (streamed: any size)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from kawa.errors import KawaError

    metadata: dict[str, str] = {}
    for item in meta or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise KawaError(f"--meta {item!r} must look like NAME=VALUE")
        metadata[name] = value
    for path in files:
        if not path.is_file():
            raise KawaError(f"{path} is not a file; kawa put uploads files (use a shell glob for many)")
    total = sum(path.stat().st_size for path in files)
    with _store() as store, Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=console, transient=True, disable=len(files) < 2 and total < 64 * 1024 * 1024,
    ) as progress:
        task = progress.add_task(f"uploading {len(files)} file(s)", total=total)
        for path in files:
            key = prefix + path.name
            with open(path, "rb") as handle:
                info = store.put(bucket, key, _counting(handle, progress, task), content_type=content_type,
                                 metadata=metadata)
            progress.console.print(f"{bucket}/{info.key}  {info.size} bytes  etag {info.etag}", highlight=False)


def _counting(handle: object, progress: object, task: object) -> Iterator[bytes]:
    while True:
        chunk = handle.read(1024 * 1024)  # type: ignore[attr-defined]
        if not chunk:
            return
        progress.advance(task, len(chunk))  # type: ignore[attr-defined]
        yield chunk


@app.command()
def get(
    bucket: str,
    key: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here (default: standard output)")] = None,
) -> None:
    """Download one object (streamed)."""
    with _store() as store, store.get(bucket, key) as reader:
        if output is None or str(output) == "-":
            out = sys.stdout.buffer
            for chunk in reader.iter_chunks():
                out.write(chunk)
            out.flush()
            return
        partial = output.with_name(output.name + ".part")
        with open(partial, "wb") as handle:
            for chunk in reader.iter_chunks():
                handle.write(chunk)
        partial.replace(output)
    typer.echo(f"wrote {reader.info.size} bytes to {output}", err=True)


@app.command("ls")
def ls(
    bucket: str,
    prefix: Annotated[str, typer.Option("--prefix", "-p", help="only keys starting with this")] = "",
    long: Annotated[bool, typer.Option("--long", "-l", help="show size, modification time and ETag")] = False,
) -> None:
    """List the objects of BUCKET."""
    from kawa.store.base import iter_objects

    with _store() as store:
        for info in iter_objects(store, bucket, prefix):
            if long:
                when = info.last_modified.strftime("%Y-%m-%d %H:%M:%S") if info.last_modified else "-"
                typer.echo(f"{info.size:>12}  {when}  {info.etag}  {info.key}")
            else:
                typer.echo(info.key)


@app.command("rm")
def rm(
    bucket: str,
    keys: Annotated[list[str], typer.Argument(help="keys to delete")],
    missing_ok: Annotated[bool, typer.Option("--missing-ok", "-f", help="no error for a missing key")] = False,
) -> None:
    """Delete objects."""
    with _store() as store:
        for key in keys:
            store.delete(bucket, key, missing_ok=missing_ok)
            console.print(f"deleted {bucket}/{key}", highlight=False)


@notify_app.command("add")
def notify_add(
    bucket: str,
    topic: Annotated[str, typer.Option("--topic", "-t", help="topic the events go to (created if missing)")],
    events: Annotated[
        list[str] | None,
        typer.Option("--events", "-e", help="ObjectCreated:* (default), ObjectRemoved:*, ObjectCreated:Put, …"),
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="only keys starting with this")] = None,
    suffix: Annotated[str | None, typer.Option(help="only keys ending with this, e.g. .dcm")] = None,
    regex: Annotated[str | None, typer.Option(help="only keys that match this regular expression entirely")] = None,
    create_bucket: Annotated[
        bool, typer.Option("--create-bucket/--no-create-bucket", help="create the bucket if it does not exist")
    ] = True,
) -> None:
    """Publish changes of BUCKET's objects to TOPIC (applies to changes from now on)."""
    from kawa.store.rules import NotificationRule

    rule = NotificationRule(bucket=bucket, topic=topic, events=tuple(events or ()), prefix=prefix, suffix=suffix,
                            regex=regex)
    with _store() as store:
        if create_bucket and not store.bucket_exists(bucket):
            store.create_bucket(bucket, exist_ok=True)
            console.print(f"created bucket [bold]{bucket}[/]")
        stored = store.add_notification(rule)
    console.print(
        f"bucket [bold]{bucket}[/] → topic [bold]{topic}[/]: {', '.join(stored.events)} "
        f"filters {stored.describe_filters()} (rule {stored.id}, mode {stored.mode})",
        highlight=False,
    )


@notify_app.command("list")
def notify_list(bucket: str) -> None:
    """Show BUCKET's notification rules."""
    from rich.table import Table

    with _store() as store:
        rules = store.notifications(bucket)
    table = Table("id", "topic", "events", "filters", "mode")
    for rule in rules:
        table.add_row(rule.id, rule.topic, ", ".join(rule.events), rule.describe_filters(), rule.mode)
    console.print(table)


@notify_app.command("remove")
def notify_remove(bucket: str, rule_id: str) -> None:
    """Remove one of BUCKET's notification rules (see `kawa notify list`)."""
    with _store() as store:
        store.remove_notification(bucket, rule_id)
    console.print(f"removed rule {rule_id} from bucket [bold]{bucket}[/]")


@app.command("ingress")
def ingress(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8090,
    fd: Annotated[
        int | None, typer.Option(help="serve on this inherited listening socket (systemd socket activation: 3)")
    ] = None,
) -> None:
    """Receive Ceph RGW's HTTP bucket notifications (POST /rgw/TOPIC) and append them to the event log.

    Each delivery is answered 200 only after the log acknowledged it, so an RGW topic with persistent=true
    retries while Kawa is down. Set store.notify.ingress_url to this URL before `kawa notify add`.
    """
    from kawa.log import open_log
    from kawa.store.ingress import Ingress, serve

    config = get_config()
    event_log = open_log(config=config)
    handler = Ingress(event_log, region=config.store.region,
                      publish_timeout_s=config.store.notify.publish_timeout_s)
    where = f"socket fd {fd}" if fd is not None else f"http://{host}:{port}"
    console.print(f"notification ingress on {where}, POST /rgw/<topic> → log {config.log.uri}", highlight=False)
    try:
        serve(handler, host=host, port=port, fd=fd)
    finally:
        handler.close()
        event_log.close()
