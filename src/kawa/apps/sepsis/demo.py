"""``kawa demo sepsis``: a simulated hospital day streamed through the sepsis app, live, from nothing.

Starts the app on the platform ``kawa demo`` hands over (its topics and its two functions), serves the
portal (the board is at ``<portal>/apps/sepsis``), then plays the simulated day at ``speed`` simulated
seconds per wall second: every ``block_min`` simulated minutes, one FHIR R4 Bundle per patient with that
block's observations (a few damaged, to show the dead-letter path), and the outcomes that became known in
the block. The loop is closed: the alerts the app raises reach the simulated clinicians, whose antibiotics
then change the patients' next observations. Ctrl-C (or ``--duration``) stops it with a summary.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from kawa.apps.demo import log_to_file, serve_portal
from kawa.apps.sepsis.app_settings import SepsisSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import RenderableType

    from kawa.apps.plugin import Declared, DemoOptions
    from kawa.apps.sepsis.sim import Observations
    from kawa.log.base import Consumer, Producer
    from kawa.platform import Platform

console = Console()

FHIR_TYPE = "dev.kawa.fhir.observation"
SOURCE = "kawa://sepsis/demo/hospital"


@dataclass
class Tally:
    """What the demo sent and saw come back in this run."""

    messages: int = 0
    damaged: int = 0
    observations: int = 0
    outcomes: int = 0
    scored: int = 0
    alerts: int = 0
    dead_lettered: int = 0
    census: int = 0
    sim_h: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_alert_h: float | None = None

    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 99)) if self.latencies_ms else math.nan


def demo(platform: Platform, declared: Declared, options: DemoOptions) -> int:
    """Run the sepsis app on ``platform`` on a simulated day; 0 when it ran."""
    from kawa.apps.runtime import start_app

    s: SepsisSettings = declared.settings
    if options.corrupt is not None:
        s = s.model_copy(update={"corrupt_fraction": options.corrupt})
    log_file = log_to_file(platform, "sepsis")
    sim = s.sim
    console.print(
        f"[bold]Kawa sepsis demo[/] — home [bold]{platform.config.home}[/], log [bold]{platform.config.log.uri}[/]; "
        f"platform log in {log_file}"
    )
    console.print(
        f"  {sim.patients:,} patients over {sim.hours:g} simulated hours at {s.speed:g}x "
        f"({sim.hours * 3600 / s.speed:,.0f} s), a Bundle per patient every {s.block_min:g} simulated min; "
        f"score {s.model_ref or 'NEWS2'}, alert at >= {s.alert_threshold:g}, suppression {s.suppress_h:g} h, "
        f"budget {s.budget_per_h}/h"
    )
    if s.model_ref is not None:
        _ensure_model(platform, s, options.train_count)
    with console.status("starting the app: topics, the ingest and score functions"):
        start_app(platform, declared)
    if s.history_admissions:
        with console.status(f"measuring the bedside rules on {s.history_admissions:,} simulated past admissions"):
            rules = _publish_history(platform, s)
        console.print("matured baselines (simulated history, on the board): " + "; ".join(
            f"{r.rule} PPV {_pct(r.ppv)}, sensitivity {_pct(r.sensitivity)}" for r in rules))
    server = serve_portal(platform, console) if options.portal else None
    if server is not None:
        console.print(f"board: [bold link={server.url}/apps/sepsis]{server.url}/apps/sepsis[/]")
    console.print(
        f"topics: {s.observations_topic} (FHIR in) → {s.charted_topic} → {s.scores_topic}, "
        f"[bold]{s.alerts_topic}[/], {s.decisions_topic}, {s.outcomes_topic}; dead letters {s.dead_letter_topic}"
        " — Ctrl-C stops"
    )
    try:
        tally = _stream(platform, s, options.duration)
    finally:
        if server is not None:
            server.stop()
    _summary(tally, s)
    return 0


def _ensure_model(platform: Platform, s: SepsisSettings, admissions: int | None) -> None:
    """With ``score_source: model``: train and promote the LightGBM score when its alias points nowhere."""
    from kawa.apps.sepsis.train import train
    from kawa.errors import ModelAliasNotFound, ModelNotFound
    from kawa.ml.registry import Registry

    registry = Registry(platform.config, publish=False)
    try:
        version: int | None = registry.resolve(str(s.model_ref))
    except (ModelNotFound, ModelAliasNotFound):
        version = None
    finally:
        registry.close()
    if version is not None:
        console.print(f"model [bold]{s.model_ref}[/] → version {version}")
        return
    n = admissions or 800  # about 15 s here; fewer give a model no better than NEWS2
    with console.status(f"no model at {s.model_ref}: training one on {n:,} simulated admissions (LightGBM)"):
        result = train(patients=n, hours=48.0, config=platform.config, settings=s)
    console.print(
        f"trained [bold]{result.get('model')}[/] v{result.get('version')} in {result.get('seconds')} s: held-out "
        f"hourly AUROC {result['auroc_model']:.3f} (NEWS2 {result['auroc_news2']:.3f})"
        + (f"; promoted to {s.model_alias}" if result.get("promoted") else "")
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _publish_history(platform: Platform, s: SepsisSettings) -> list[Any]:
    """Measure the bedside rules on a matured simulated history and put them on the metrics topic."""
    from kawa.apps.sepsis.events import METRICS_TYPE
    from kawa.apps.sepsis.history import measure_history
    from kawa.events import new_event
    from kawa.events.cloudevents import to_kafka

    rules = measure_history(s)
    producer = platform.log.producer()
    try:
        for r in rules:
            key, value, headers = to_kafka(new_event(METRICS_TYPE, "kawa://sepsis/demo/history", r.data()))
            producer.produce(s.metrics_topic, value, key=key, headers=headers)
        producer.flush()
    finally:
        producer.close()
    return rules


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _stream(platform: Platform, s: SepsisSettings, duration: float) -> Tally:
    from rich.live import Live

    from kawa.apps.sepsis.care import outcomes, respond
    from kawa.apps.sepsis.cohort import make_patients
    from kawa.apps.sepsis.events import pseudonym
    from kawa.apps.sepsis.fhir import default_subject
    from kawa.apps.sepsis.outcomes import outcome_events
    from kawa.apps.sepsis.sim import iter_blocks

    sim = s.sim
    patients = make_patients(sim)
    key = s.key()
    aliases = [pseudonym(default_subject(i), key) for i in range(len(patients))]
    index = {a: i for i, a in enumerate(aliases)}
    alert_h = np.full(len(patients), np.nan)

    def care() -> Any:
        return respond(patients, sim, alert_h)

    tally = Tally()
    started_ms = int(time.time() * 1000)
    watch = _Watch(platform, s, started_ms, index, alert_h, tally)
    producer = platform.log.producer()
    rng = np.random.default_rng(sim.seed + 1)
    block_h = s.block_min / 60.0
    began = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            for k, block in enumerate(iter_blocks(patients, sim, care, block_h)):
                a, b = k * block_h, min(sim.hours, (k + 1) * block_h)
                publish_block(producer, s, block, rng, tally, aliases)
                done = outcome_events(outcomes(patients, sim, care()), lambda r: aliases[_number(r)], since_h=a,
                                      until_h=b)  # fmt: skip
                send_outcomes(producer, s, done)
                tally.outcomes += len(done)
                tally.sim_h = b
                producer.flush()
                due = began + b * 3600.0 / s.speed
                while True:
                    watch.poll()
                    live.update(_view(tally, s, time.monotonic() - began))
                    if time.monotonic() >= due or (duration and time.monotonic() - began >= duration):
                        break
                    time.sleep(min(0.2, max(0.0, due - time.monotonic())))  # pacing to the simulated clock
                if duration and time.monotonic() - began >= duration:
                    break
            _drain(watch, tally, live, s, began)
        console.print()
    except KeyboardInterrupt:
        pass  # Ctrl-C: stop sending; what was sent is summarised below
    finally:
        signal.signal(signal.SIGTERM, previous)
        producer.close()
        watch.poll()
        watch.close()
    return tally


def _number(reference: str) -> int:
    return int(reference.rpartition("-")[2])


def publish_block(
    producer: Producer, s: SepsisSettings, block: Observations, rng: np.random.Generator, tally: Tally,
    aliases: list[str], pace: Callable[[int, int], None] | None = None,
) -> None:
    """One Bundle per patient of the block's observations (some damaged: a missing code). ``pace(i, n)``, when
    given, is called before the i-th of the block's n Bundles (a benchmark spreads them over the block)."""
    from kawa.apps.sepsis.fhir import encode_bundle
    from kawa.apps.sepsis.sim import iter_observations
    from kawa.events import new_event
    from kawa.events.cloudevents import to_kafka

    by_patient: dict[int, list[Any]] = {}
    for o in iter_observations(block):
        by_patient.setdefault(o.patient, []).append(o)
    for i, (patient, obs) in enumerate(by_patient.items()):
        if pace is not None:
            pace(i, len(by_patient))
        bundle = encode_bundle(obs)
        if rng.random() < s.corrupt_fraction:
            del bundle["entry"][0]["resource"]["code"]
            tally.damaged += 1
        _key, value, headers = to_kafka(new_event(FHIR_TYPE, SOURCE, bundle))
        # keyed by patient (the pseudonym: no PHI in the key), so patients are ingested in parallel, each in order
        producer.produce(s.observations_topic, value, key=aliases[patient].encode(), headers=headers)
        tally.messages += 1
        tally.observations += len(obs)


def send_outcomes(producer: Producer, s: SepsisSettings, events: list[Any]) -> None:
    from kawa.apps.sepsis.outcomes import SOURCE as OUTCOMES
    from kawa.events.cloudevents import to_kafka

    for e in events:
        key, value, headers = to_kafka(e.to_event(OUTCOMES, id=e.id))
        producer.produce(s.outcomes_topic, value, key=key, headers=headers)


class _Watch:
    """Reads what the app wrote in this run (records from ``started_ms`` on): alerts go to the simulated
    clinicians (``alert_h``), the rest is counted."""

    def __init__(self, platform: Platform, s: SepsisSettings, started_ms: int, index: dict[str, int],
                 alert_h: np.ndarray[Any, np.dtype[np.float64]], tally: Tally) -> None:  # fmt: skip
        group = f"sepsis-demo-{started_ms}"
        topics = [s.alerts_topic, s.scores_topic, s.dead_letter_topic, s.census_topic]
        self.consumer: Consumer = platform.log.consumer(group, topics, auto_offset_reset="earliest")
        self.s, self.started_ms, self.index, self.alert_h, self.tally = s, started_ms, index, alert_h, tally

    def poll(self) -> None:
        import json

        from kawa.apps.sepsis.fhir import EPOCH

        epoch_s = EPOCH.timestamp()
        s, t = self.s, self.tally
        while True:
            records = self.consumer.poll(timeout=0.05, max_records=2000)
            if not records:
                return
            for r in records:
                if r.timestamp_ms < self.started_ms:
                    continue
                if r.topic == s.scores_topic:
                    t.scored += 1
                elif r.topic == s.dead_letter_topic:
                    t.dead_lettered += 1
                elif r.topic == s.census_topic:
                    t.census += 1
                elif r.topic == s.alerts_topic:
                    data = json.loads(r.value or b"{}")
                    t.alerts += 1
                    t.latencies_ms.append(float(data.get("latency_ms", 0.0)))
                    i = self.index.get(str(data.get("patient")))
                    at_h = (float(data.get("time", 0.0)) - epoch_s) / 3600.0
                    if i is not None:
                        self.alert_h[i] = np.fmin(self.alert_h[i], at_h)
                    if t.first_alert_h is None:
                        t.first_alert_h = at_h
                        console.print(f"first alert at simulated {_clock(at_h)} (patient {data.get('patient')})")

    def close(self) -> None:
        self.consumer.close()


def _drain(watch: _Watch, tally: Tally, live: Any, s: SepsisSettings, began: float) -> None:
    """After the last block: wait (at most 30 s) until every message was scored or dead-lettered."""
    deadline = time.monotonic() + 30.0
    while tally.scored + tally.dead_lettered < tally.messages and time.monotonic() < deadline:
        watch.poll()
        live.update(_view(tally, s, time.monotonic() - began))
        time.sleep(0.1)


def _clock(h: float) -> str:
    minutes = int(h * 60)
    return f"day {minutes // 1440 + 1} {minutes % 1440 // 60:02d}:{minutes % 60:02d}"


def _view(t: Tally, s: SepsisSettings, elapsed: float) -> RenderableType:
    from rich.table import Table

    table = Table(title="Sepsis early warning (live)", show_header=False, min_width=60)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("simulated clock", f"{_clock(t.sim_h)} of {s.sim.hours:g} h  ({elapsed:,.0f} s wall)")
    table.add_row("sent", f"{t.messages:,} FHIR Bundles, {t.observations:,} observations ({t.damaged:,} damaged)")
    behind = t.messages - t.scored - t.dead_lettered
    table.add_row("scored", f"{t.scored:,}" + (f"  ({behind:,} in flight)" if behind > 0 else ""))
    table.add_row("patients seen", f"{t.census:,}")
    table.add_row("alerts", f"[red]{t.alerts:,}[/]  (p99 latency {_ms(t.p99_ms())})")
    table.add_row("dead-lettered", f"{t.dead_lettered:,}")
    table.add_row("outcomes published", f"{t.outcomes:,}")
    return table


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:,.0f} ms"


def _summary(t: Tally, s: SepsisSettings) -> None:
    from rich.table import Table

    table = Table(title="summary (read back from the app's topics)", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("simulated", f"{t.sim_h:,.2f} h of {s.sim.hours:g} h, {s.sim.patients:,} patients")
    table.add_row("sent", f"{t.messages:,} Bundles ({t.observations:,} observations, {t.damaged:,} damaged)")
    table.add_row("scored", f"{t.scored:,} charts, {t.census:,} patients seen")
    table.add_row("alerts", f"{t.alerts:,} (observation → alert p99 {_ms(t.p99_ms())})")
    table.add_row("dead-lettered", f"{t.dead_lettered:,} (reasons on {s.dead_letter_topic})")
    table.add_row("outcomes", f"{t.outcomes:,} on {s.outcomes_topic}")
    console.print(table)
    console.print(
        f"next: [bold]kawa consume {s.alerts_topic} --max 3[/], [bold]kawa consume {s.dead_letter_topic} --max 1[/], "
        f"[bold]kawa consume {s.decisions_topic} --max 1[/]"
    )
