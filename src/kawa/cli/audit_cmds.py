"""``kawa audit``: who did what, and every PHI read, from the audit trail on the log (docs/portal.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from kawa.cli.app import app, console, get_config


@app.command("audit")
def audit(
    user: Annotated[str | None, typer.Option("--user", help="only this user's records")] = None,
    action: Annotated[str | None, typer.Option("--action", help="only this action (e.g. phi.read)")] = None,
    result: Annotated[str | None, typer.Option("--result", help="only ok, denied or error")] = None,
    since: Annotated[str | None, typer.Option("--since", help="from this time (ISO 8601 or epoch seconds)")] = None,
    limit: Annotated[int, typer.Option("--limit", help="the newest this many records (0: all)")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The audit trail: one record per mutating request and per PHI read, oldest first."""
    from kawa.audit.trail import AuditFilter, read_audit
    from kawa.cli.monitor_cmds import _time
    from kawa.log import open_log

    start = _time(since, "--since")
    where = AuditFilter(user=user, action=action, result=result, limit=limit or None,
                        since=datetime.fromtimestamp(start, UTC) if start is not None else None)  # fmt: skip
    config = get_config()
    log = open_log(config.log.uri, config)
    try:
        records = read_audit(log, where)
    finally:
        log.close()
    if as_json:
        for r in records:
            typer.echo(json.dumps(r.data()))
        return
    if not records:
        console.print("no audit records match (the portal writes one per mutating request and per PHI read)")
        return
    from rich.table import Table

    table = Table("time", "user", "action", "resource", "result", "status", "request id")
    for r in records:
        table.add_row(r.time.isoformat(timespec="seconds"), r.user, r.action, r.resource, r.result, str(r.status),
                      r.request_id)  # fmt: skip
    console.print(table)
