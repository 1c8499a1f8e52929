"""A model's loop as a person reads it: one *episode* per candidate (trigger → training → gates → shadow → OPE →
canary → decision), and the triggers that were refused. Pure: built from :func:`kawa.retrain.controller.history`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kawa.retrain.controller import LoopEntry

__all__ = ["Episode", "Node", "Timeline", "timeline"]


@dataclass(frozen=True)
class Node:
    """One step: ``kind`` (trigger, training, offline, shadow, ope, canary, evaluation, approval, decision), a one-line
    ``summary`` and its ``evidence`` (the recorded data)."""

    kind: str
    at: float
    summary: str
    status: str = "done"  # done | ok | failed | waiting
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    job: str
    nodes: list[Node] = field(default_factory=list)
    outcome: str = "in flight"  # promoted | rejected | rolled back | in flight
    version: int | None = None
    experiment: str | None = None


@dataclass
class Timeline:
    model: str
    episodes: list[Episode] = field(default_factory=list)
    skipped: list[Node] = field(default_factory=list)


def timeline(model: str, entries: Iterable[LoopEntry]) -> Timeline:
    out = Timeline(model)
    inputs: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.kind == "kawa.loop.input":
            event = e.data["event"]
            inputs[str(event.get("id"))] = event
            if out.episodes:
                _on_input(out.episodes[-1], event, e.at)
        elif e.kind == "kawa.loop.done":
            _on_done(out, e.data, e.at, inputs)
        elif e.kind == "kawa.loop.decision":
            for episode in reversed(out.episodes):
                if episode.version == e.data.get("version"):
                    episode.nodes.append(Node("record", e.at, "decision record", "done", e.data))
                    break
    return out


def _on_input(current: Episode, event: dict[str, Any], at: float) -> None:
    kind = event.get("type")
    if kind == "TrainingDone":
        ok = event.get("error") is None
        summary = (f"job finished: v{event.get('version')}, holdout {event.get('candidate_metric')} against the "
                   f"champion's {event.get('champion_metric')}") if ok else f"job failed: {event.get('error')}"
        current.nodes.append(Node("training", at, summary, "ok" if ok else "failed", event))
    elif kind == "Evaluated":
        arm = f" for {event.get('arm')}" if event.get("arm") else ""
        won = event.get("kind") == "stop-efficacy" and event.get("arm") == "candidate" and event.get("record_ok")
        current.nodes.append(Node("evaluation", at, f"canary decided: {event.get('kind')}{arm}",
                                  "ok" if won else "failed", event))  # fmt: skip
    elif kind == "ShadowProgress" and current.nodes and current.nodes[-1].kind == "shadow":
        last = current.nodes.pop()  # one shadow node, showing the latest count
        current.nodes.append(Node("shadow", at, f"shadow {last.evidence.get('experiment')}: {event.get('matured')} "
                                  "units matured under both models", "waiting", {**last.evidence, **event}))
    elif kind == "OpeEstimate":
        summary = (f"off-policy estimate of candidate - champion {event.get('estimate'):+.4g} "
                   f"[{event.get('lower'):+.4g}, {event.get('upper'):+.4g}] on {event.get('n')} units")
        current.nodes.append(Node("ope", at, summary, "done", event))
    elif kind == "Approval":
        verdict = "approved" if event.get("approved") else "rejected"
        current.nodes.append(Node("approval", at, f"{verdict} by {event.get('by') or 'a person'}",
                                  "ok" if event.get("approved") else "failed", event))  # fmt: skip


def _on_done(out: Timeline, data: dict[str, Any], at: float, inputs: dict[str, dict[str, Any]]) -> None:
    kind = data.get("kind")
    if kind == "Train":
        trigger = inputs.get(str(data.get("trigger")), {})
        current = Episode(str(data.get("job")))
        out.episodes.append(current)
        current.nodes.append(Node("trigger", float(trigger.get("at", at)), _trigger(trigger), "done", trigger))
        current.nodes.append(Node("training", at, f"job {data.get('job')} submitted", "waiting", data))
        return
    if kind == "Skip":
        trigger = inputs.get(str(data.get("trigger")), {})
        out.skipped.append(Node("trigger", at, f"{_trigger(trigger)} — not acted on: {data.get('reason')}",
                                "failed", {**data, "trigger": trigger}))  # fmt: skip
        return
    if not out.episodes:
        return
    current = out.episodes[-1]
    if kind == "StartShadow":
        from kawa.retrain.shadow import shadow_name

        current.version = data.get("version")
        name = shadow_name(out.model, int(data.get("version") or 0))
        current.nodes.append(Node("offline", at, "offline gate passed", "ok", data))
        current.nodes.append(Node("shadow", at, f"shadow {name} started: scored on the champion's requests, "
                                  "never acted on", "waiting", {**data, "experiment": name}))
    elif kind == "StartCanary":
        current.experiment, current.version = data.get("experiment"), data.get("version")
        if not any(n.kind == "offline" for n in current.nodes):
            current.nodes.append(Node("offline", at, "offline gate passed", "ok", data))
        current.nodes.append(Node("canary", at, f"canary {current.experiment} started", "waiting", data))
    elif kind == "RequestApproval":
        current.version = data.get("version")
        current.nodes.append(Node("approval", at, "waiting for a person (kawa loop approve|reject)", "waiting", data))
    elif kind in ("Promote", "Reject", "Rollback"):
        current.version = data.get("version", current.version)
        current.outcome = {"Promote": "promoted", "Reject": "rejected", "Rollback": "rolled back"}[kind]
        current.nodes.append(Node("decision", at, f"{current.outcome}: {data.get('reason')}",
                                  "ok" if kind == "Promote" else "failed", data))  # fmt: skip


def _trigger(event: dict[str, Any]) -> str:
    kind = event.get("type", "?")
    if kind == "Alert":
        return f"monitor alert: {event.get('kind')}"
    if kind == "PerformanceDrop":
        return f"matured metric dropped by {event.get('drop')}"
    if kind == "Tick":
        return "schedule"
    if kind == "Outcomes":
        return "new labelled outcomes"
    return str(kind)
