"""``kawa experiments create|list|status|stop``: experiments on the event log (see docs/evaluation.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kawa.cli.app import app, console, get_config

if TYPE_CHECKING:
    from kawa.evaluation.experiments import ExperimentStore

experiments_app = typer.Typer(help="Create, list, inspect and stop experiments (A/B, canary, shadow).",
                              no_args_is_help=True)  # fmt: skip
app.add_typer(experiments_app, name="experiments")

AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _store() -> tuple[ExperimentStore, str]:
    from kawa.evaluation.experiments import ExperimentStore
    from kawa.log import open_log

    config = get_config()
    return ExperimentStore(open_log(config.log.uri, config)), config.ml.predictions_topic


@experiments_app.command("create")
def create(
    spec_file: Annotated[Path, typer.Argument(help="the experiment spec, YAML or JSON (see docs/evaluation.md)")],
    shadow: Annotated[bool, typer.Option("--shadow", help="score every arm on every unit; only the assigned acts")]
    = False,
) -> None:
    """Start an experiment: units are assigned to arms from now on, in every process that serves the model."""
    import yaml

    from kawa.errors import KawaError
    from kawa.evaluation.spec import ExperimentSpec

    try:
        data = yaml.safe_load(spec_file.read_text())
    except OSError as exc:
        raise KawaError(f"cannot read {spec_file}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KawaError(f"{spec_file} is not YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise KawaError(f"{spec_file} must hold one experiment spec (a mapping with name, model, arms, ...)")
    store, _ = _store()
    state = store.create(ExperimentSpec.from_dict(data.get("experiment", data)), shadow=shadow)
    arms = ", ".join(f"{a.name} {a.weight:.0%}" for a in state.spec.arms)
    console.print(f"experiment [bold]{state.name}[/] running on {state.spec.model} ({arms}); spec "
                  f"{state.spec.spec_hash()[:12]}{' in shadow mode' if shadow else ''}")  # fmt: skip


@experiments_app.command("list")
def list_(as_json: AsJson = False) -> None:
    """Every experiment, running first."""
    from rich.table import Table

    store, _ = _store()
    states = store.list()
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in states], indent=2))
        return
    if not states:
        console.print("no experiments; `kawa experiments create FILE` starts one")
        return
    table = Table("name", "model", "status", "arms", "unit", "primary metric", "spec")
    for s in states:
        arms = ", ".join(f"{a.name} {a.weight:.0%}" for a in s.spec.arms)
        table.add_row(s.name, s.spec.model, s.status + (" (shadow)" if s.shadow else ""), arms, s.spec.unit,
                      s.spec.primary_metric, s.spec.spec_hash()[:12])  # fmt: skip
    console.print(table)


@experiments_app.command("status")
def status(name: str, as_json: AsJson = False) -> None:
    """Units and predictions per arm from the decision records, and the sample-ratio check."""
    from rich.table import Table

    from kawa.evaluation.status import read_status

    store, topic = _store()
    result = read_status(store.log, store.get(name), topic)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    state = result.state
    console.print(f"[bold]{state.name}[/] on {state.spec.model}: {state.status}"
                  + (f" ({state.reason})" if state.reason else ""))  # fmt: skip
    table = Table("arm", "planned", "units", "share", "predictions", "shadow", "versions")
    total = sum(a.units for a in result.arms) or 1
    for a in result.arms:
        table.add_row(a.arm, f"{a.weight:.1%}", str(a.units), f"{a.units / total:.1%}", str(a.predictions),
                      str(a.shadow_predictions), ", ".join(map(str, a.versions)) or "-")  # fmt: skip
    console.print(table)
    if result.srm_p_value is None:
        console.print("no decisions recorded yet")
    elif result.sample_ratio_mismatch:
        console.print(f"[bold red]sample ratio mismatch[/]: p = {result.srm_p_value:.2g} < {state.spec.srm_alpha:g}; "
                      "the split is not the planned one — check assignment and logging before reading any effect")
    else:
        console.print(f"sample ratio as planned (p = {result.srm_p_value:.2g})")
    for note in result.notes:
        console.print(note)


@experiments_app.command("evaluate")
def evaluate(
    name: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep looking every --interval until decided")]
    = False,
    interval: Annotated[float, typer.Option("--interval", help="seconds between looks with --follow")] = 10.0,
    join_by: Annotated[str, typer.Option("--join-by", help="outcomes name their decision's event (ref) or an "
                                          "entity and time (entity)")] = "ref",
    auto_stop: Annotated[bool, typer.Option("--auto-stop/--no-auto-stop", help="stop the experiment when a look "
                                            "decides")] = True,
) -> None:
    """Join the experiment's decisions to their matured outcomes and take always-valid looks; each look goes to
    the kawa.evaluations topic, a decision too (with its full decision record)."""
    import time

    from kawa.errors import KawaError
    from kawa.evaluation.service import Evaluator

    if join_by not in ("ref", "entity"):
        raise KawaError(f"--join-by is ref or entity, not {join_by!r}")
    store, _ = _store()
    evaluator = Evaluator(store.log, name, join_by=join_by, auto_stop=auto_stop).start()  # type: ignore[arg-type]
    try:
        while True:
            the_look = evaluator.step()
            if the_look is not None:
                n = ", ".join(f"{arm} {count}" for arm, count in the_look.n.items())
                console.print(f"look {the_look.index}: matured units {n}; SRM p = {the_look.srm_p_value:.3g}")
                for c in the_look.comparisons:
                    console.print(f"  {c.arm} - {evaluator.spec.control}: {c.estimate:+.4g} "
                                  f"[{c.lower:+.4g}, {c.upper:+.4g}] (always-valid p = {c.p_value:.3g})")
            elif evaluator.decision is None:
                console.print("no decisions of this experiment yet")
            if evaluator.decision is not None:
                d = evaluator.decision
                console.print(f"[bold]decided[/] at look {d.look}: {d.kind}" + (f" ({d.arm})" if d.arm else "")
                              + f": {d.reason}")  # fmt: skip
                return
            if not follow:
                return
            time.sleep(interval)
    finally:
        evaluator.close()


@experiments_app.command("stop")
def stop(
    name: str,
    reason: Annotated[str, typer.Option("--reason", help="why; kept with the experiment")] = "stopped by a person",
) -> None:
    """Stop assigning: every unit gets the model reference the handler asks for again."""
    store, _ = _store()
    state = store.stop(name, reason)
    console.print(f"experiment [bold]{state.name}[/] stopped: {state.reason}")
