"""``kawa users …`` (portal users, roles, API tokens) and ``kawa portal`` (serve the portal alone)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from kawa.portal.users import UserStore

users_app = typer.Typer(help="Portal users: roles, passwords, API tokens.", no_args_is_help=True)
app.add_typer(users_app, name="users")

ROLES = "viewer, data-engineer, data-scientist, ml-engineer or admin"


def _store() -> UserStore:
    from kawa.portal.security import users_db_path
    from kawa.portal.users import UserStore

    return UserStore(users_db_path(get_config()))


def _read_password(from_stdin: bool) -> str | None:
    if not from_stdin:
        return None
    return sys.stdin.readline().rstrip("\n")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option("--role", "-r", help=ROLES)] = "viewer",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin (default: generate one)")
    ] = False,
) -> None:
    """Create a portal user; prints the generated password once."""
    user, password = _store().add_user(name, role, _read_password(password_stdin))
    console.print(f"added [bold]{user.name}[/] with role [bold]{user.role.value}[/]")
    if not password_stdin:
        console.print(f"password (shown once): [bold]{password}[/]", highlight=False)


@users_app.command("list")
def users_list() -> None:
    """Users with their roles."""
    from rich.table import Table

    table = Table("name", "role", "state", "tokens")
    store = _store()
    for user in store.list_users():
        table.add_row(user.name, user.role.value, "disabled" if user.disabled else "active",
                      str(len(store.tokens(user.name))))
    console.print(table)


@users_app.command("set-role")
def users_set_role(name: str, role: Annotated[str, typer.Argument(help=ROLES)]) -> None:
    """Change a user's role."""
    user = _store().set_role(name, role)
    console.print(f"{user.name} is now [bold]{user.role.value}[/]")


@users_app.command("reset-password")
def users_reset_password(
    name: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the new password from stdin")] = False,
) -> None:
    """Set a new password (generated unless --password-stdin) and end the user's sessions."""
    password = _store().set_password(name, _read_password(password_stdin))
    console.print(f"password of {name} replaced; sessions ended")
    if not password_stdin:
        console.print(f"new password (shown once): [bold]{password}[/]", highlight=False)


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Stop a user from logging in (sessions end, tokens stop working)."""
    _store().set_disabled(name, True)
    console.print(f"{name} disabled")


@users_app.command("enable")
def users_enable(name: str) -> None:
    _store().set_disabled(name, False)
    console.print(f"{name} enabled")


@users_app.command("token")
def users_token(name: str, label: Annotated[str, typer.Option(help="what the token is for")] = "cli") -> None:
    """Create an API token for NAME (printed once): `Authorization: Bearer <token>`."""
    info, secret = _store().create_token(name, label)
    console.print(f"token {info.id} for {name} ({info.label}), shown once:")
    print(secret)


@app.command("portal")
def portal_cmd(
    host: Annotated[str | None, typer.Option(help="address to bind (default portal.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default portal.port, 8787; 0 = any free)")] = None,
) -> None:
    """Serve the portal alone (no functions or routes run in this process; jobs, models, topics and
    buckets are shown from the shared home)."""
    from kawa.cli.signals import stop_on_signals
    from kawa.platform import Platform
    from kawa.portal import serve

    platform = Platform(get_config())
    with stop_on_signals() as stop:
        server = serve(platform, host=host, port=port)
        try:
            if server.portal is not None and not server.portal.users.list_users():
                console.print("no portal users yet: create one with [bold]kawa users add NAME --role admin[/]")
            console.print(f"[bold green]portal[/] on {server.url} — Ctrl-C to stop")
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
            platform.stop()
