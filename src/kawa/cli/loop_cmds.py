"""``kawa loop run|history|approve|reject``: the retraining loop from the shell (see docs/loop.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.retrain.policy import LoopPolicy

loop_app = typer.Typer(help="The retraining loop: run it, read its history, approve or reject a candidate.",
                       no_args_is_help=True)  # fmt: skip
app.add_typer(loop_app, name="loop")


def _policy(config: KawaConfig, model: str, policy_file: Path | None) -> LoopPolicy:
    import yaml

    from kawa.errors import KawaError
    from kawa.retrain.policy import LoopPolicy

    if policy_file is not None:
        try:
            return LoopPolicy.from_dict(yaml.safe_load(policy_file.read_text()) or {})
        except OSError as exc:
            raise KawaError(f"cannot read {policy_file}: {exc.strerror}") from exc
    for data in config.loop.policies:
        if data.get("model") == model:
            return LoopPolicy.from_dict(data)
    raise KawaError(f"no loop policy for model {model!r}: add one under loop.policies in kawa.yaml, or pass "
                    "--policy FILE (see docs/loop.md)")


def _controller(model: str, policy_file: Path | None, *, run_jobs: bool = False) -> object:
    from kawa.log import open_log
    from kawa.retrain.controller import LoopController

    config = get_config()
    log = open_log(config.log.uri, config)
    return LoopController(config, log, _policy(config, model, policy_file), run_jobs=run_jobs).start()


@loop_app.command("run")
def run(
    model: str,
    policy: Annotated[Path | None, typer.Option("--policy", help="the policy as YAML (default: kawa.yaml)")] = None,
    once: Annotated[bool, typer.Option("--once", help="one step, then exit")] = False,
    interval: Annotated[float, typer.Option("--interval", help="seconds between steps")] = 5.0,
    run_jobs: Annotated[bool, typer.Option("--run-jobs/--no-run-jobs", help="run the job scheduler here too "
                                           "(not needed next to `kawa up`)")] = True,
) -> None:
    """Run MODEL's loop: each step reads alerts, the candidate's job and its canary, and acts."""
    import time

    from kawa.retrain.controller import LoopController

    controller = _controller(model, policy, run_jobs=run_jobs)
    assert isinstance(controller, LoopController)
    try:
        while True:
            for action in controller.step():
                console.print(f"{type(action).__name__}: {_describe(action)}", highlight=False)
            if once:
                return
            time.sleep(interval)
    finally:
        controller.close()


@loop_app.command("history")
def history_(model: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every input, action and decision record of MODEL's loop, oldest first."""
    from kawa.log import open_log
    from kawa.retrain.controller import DECISION, DONE, INPUT, history

    config = get_config()
    entries = history(open_log(config.log.uri, config), model)
    if as_json:
        typer.echo(json.dumps([{"kind": e.kind, "at": e.at, **e.data} for e in entries], indent=2))
        return
    if not entries:
        console.print(f"no loop history for {model}")
        return
    import time

    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        if e.kind == INPUT:
            event = e.data["event"]
            console.print(f"{when}  in   {event['type']} {event['id']}", highlight=False)
        elif e.kind == DONE:
            rest = {k: v for k, v in e.data.items() if k not in ("model", "at", "action", "kind")}
            console.print(f"{when}  act  {e.data['kind']} {rest}", highlight=False)
        elif e.kind == DECISION:
            console.print(f"{when}  [bold]{e.data['decision']}[/] v{e.data['version']}: {e.data['reason']}")


def _approval(model: str, version: int, approved: bool, by: str, policy: Path | None) -> None:
    import time

    from kawa.retrain.controller import LoopController
    from kawa.retrain.decide import Approval

    controller = _controller(model, policy)
    assert isinstance(controller, LoopController)
    try:
        actions = controller.submit(Approval(f"approval-{model}-{version}-{time.time_ns()}", time.time(),
                                             version=version, approved=approved, by=by))  # fmt: skip
        if not actions:
            console.print(f"{model} v{version} is not waiting for approval (phase {controller.state.phase})")
        for action in actions:
            console.print(f"{type(action).__name__}: {_describe(action)}", highlight=False)
    finally:
        controller.close()


@loop_app.command("approve")
def approve(model: str, version: int, by: Annotated[str, typer.Option("--by")] = "cli",
            policy: Annotated[Path | None, typer.Option("--policy")] = None) -> None:
    """Approve the candidate VERSION waiting for a person: it is promoted."""
    _approval(model, version, True, by, policy)


@loop_app.command("reject")
def reject(model: str, version: int, by: Annotated[str, typer.Option("--by")] = "cli",
           policy: Annotated[Path | None, typer.Option("--policy")] = None) -> None:
    """Reject the candidate VERSION waiting for a person: the champion stays."""
    _approval(model, version, False, by, policy)


def _describe(action: object) -> str:
    from dataclasses import asdict, is_dataclass

    return json.dumps(asdict(action), default=str) if is_dataclass(action) and not isinstance(action, type) else ""
