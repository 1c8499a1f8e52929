"""``kawa demo fraud``: card payments scored in the stream, from nothing, on this machine.

Simulates a population (the handbook's design, :mod:`~kawa.apps.fraud.sim`), starts the app (its topics and
the scoring function, with the handbook's decision tree fit on a separate small simulation), and replays the
payments by event time at a speed factor, with chargebacks and the results of the cases the stream opens
arriving days later in event time. Prints where to look and a line of counts a second; stops on Ctrl-C,
SIGTERM, after ``--duration`` seconds or ``--count`` payments, then prints a summary.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from kawa.apps.demo import Background, log_to_file, serve_portal
from kawa.apps.fraud.outcomes import REPLAY_SOURCE
from kawa.apps.fraud.settings import FraudSettings

if TYPE_CHECKING:
    from kawa.apps.plugin import Declared, DemoOptions
    from kawa.log.base import Consumer
    from kawa.platform import Platform

console = Console()

DEFAULT_CORRUPT = 0.002
"""Share of damaged payments when neither the options nor the settings say: a few, to show dead-lettering."""


@dataclass
class Tally:
    """What came out of this run's stream so far (its replay ``source``), read from the decisions and dead-letter
    topics."""

    source: str
    actions: Counter[str] = field(default_factory=Counter)
    scores: dict[int, float] = field(default_factory=dict)
    dead: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def decided(self) -> int:
        return sum(self.actions.values())

    def read(self, decisions: Consumer, dead: Consumer) -> None:
        for record in decisions.poll(timeout=0.0, max_records=5000):
            try:
                data = json.loads(record.value or b"{}")
            except ValueError:
                continue
            if (data.get("event") or {}).get("source") != self.source:
                continue
            self.actions[str(data.get("action"))] += 1
            self.scores[int(data.get("tx_id", -1))] = float(data.get("score", 0.0))
            self.latencies.append(float(data.get("latency_ms", 0.0)))
        mine = self.source.encode()
        self.dead += sum(r.header("ce_source") == mine for r in dead.poll(timeout=0.0, max_records=5000))

    def p50_ms(self) -> float:
        recent = sorted(self.latencies[-2000:])
        return recent[len(recent) // 2] if recent else 0.0


def demo(platform: Platform, declared: Declared, options: DemoOptions) -> int:
    """Run the streaming fraud app on ``platform`` until interrupted; 0 when payments were decided."""
    from kawa.apps.fraud.labels import chargebacks
    from kawa.apps.fraud.replay import Replay
    from kawa.apps.fraud.sim import SimSettings, simulate
    from kawa.apps.runtime import start_app

    s: FraudSettings = declared.settings
    log_file = log_to_file(platform, "fraud")
    console.print(f"[bold]Kawa fraud demo[/] — home [bold]{platform.config.home}[/], log "
                  f"[bold]{platform.config.log.uri}[/]; platform log in {log_file}")  # fmt: skip
    with console.status(f"simulating {s.customers} customers over {s.days} days"):
        sim = simulate(SimSettings(customers=s.customers, days=s.days, drift_day=s.drift_day, seed=s.seed))
        tx = sim.tx if options.count is None else sim.tx.take(np.arange(min(options.count, len(sim.tx))))
        labels = chargebacks(tx, seed=s.seed)
    span_s = max(1, int(tx.time[-1] - tx.time[0])) if len(tx) else 1
    speed = s.speed if options.rate is None else options.rate * span_s / max(1, len(tx))
    corrupt = options.corrupt if options.corrupt is not None else DEFAULT_CORRUPT
    with console.status("starting the app (fitting the handbook's decision tree on a small simulation)"):
        running = start_app(platform, declared)
    console.print(f"  {len(tx):,} payments, {int(tx.is_fraud.sum()):,} frauds; replaying {speed:,.0f} event "
                  f"seconds a second (about {speed * len(tx) / span_s:,.0f} payments/s)")  # fmt: skip
    console.print(f"  payments → [bold]{s.transactions_topic}[/] → score-transactions → [bold]{s.decisions_topic}[/]"
                  f" (and {s.blocked_topic}, {s.investigated_topic}, {s.passed_topic}); records → "
                  f"[bold]{s.records_topic}[/]; chargebacks and case results → [bold]{s.outcomes_topic}[/]; "
                  f"damaged payments → [bold]{s.dead_letter_topic}[/]")  # fmt: skip
    console.print(f"  watch them from another terminal here: [bold]kawa consume {s.blocked_topic} --from-beginning[/]"
                  f" (or {s.investigated_topic}, {s.dead_letter_topic})")  # fmt: skip
    server = serve_portal(platform, console) if options.portal else None
    if server is not None:
        console.print(f"  board: [bold]{server.url.rstrip('/')}/apps/{declared.name}[/]")
    source = f"{REPLAY_SOURCE}/{uuid.uuid4().hex[:8]}"  # this run's: a rerun on the same home is not a duplicate
    replay = Replay(platform.log, s, tx, labels, speed=speed, corrupt=corrupt, seed=s.seed, source=source)
    worker = Background(replay.run, "kawa-fraud-replay")
    tally = Tally(source)
    group = f"fraud-demo-{uuid.uuid4().hex[:8]}"
    readers = (platform.log.consumer(f"{group}-decisions", [s.decisions_topic], auto_offset_reset="earliest"),
               platform.log.consumer(f"{group}-dead", [s.dead_letter_topic], auto_offset_reset="earliest"))  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    console.print("streaming — Ctrl-C stops")
    worker.start()
    try:
        while worker.running(timeout=1.0) and not (options.duration and time.monotonic() - started >= options.duration):
            tally.read(*readers)
            _line(tally, replay, started)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        worker.finish()  # every payment the replay sent is counted before the drain
    _drain(tally, readers, replay.stats.payments)
    for reader in readers:
        reader.close()
    _summary(tally, replay, started, running)
    _precision(tally, tx, s.capacity)
    if server is not None:
        server.stop()
    return 0 if tally.decided > 0 else 1


def _drain(tally: Tally, readers: tuple[Any, Any], sent: int, stall_s: float = 30.0) -> None:
    """What was sent still finishes: read decisions and dead letters until every payment sent has one, as long as
    they keep coming (at most ``stall_s`` without a new one); a second Ctrl-C stops waiting."""
    done, progress_at = -1, time.monotonic()
    try:
        with console.status(f"finishing the {sent - tally.decided - tally.dead:,} payments still in flight"):
            while tally.decided + tally.dead < sent:
                tally.read(*readers)
                if tally.decided + tally.dead != done:
                    done, progress_at = tally.decided + tally.dead, time.monotonic()
                elif time.monotonic() - progress_at > stall_s:
                    break
                time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    missing = sent - tally.decided - tally.dead
    if missing > 0:
        console.print(f"[yellow]{missing:,} payments sent have no decision yet[/] (none arrived for {stall_s:g} s, or "
                      "you stopped the wait); the platform log says why")  # fmt: skip


def _precision(tally: Tally, tx: Any, k: int) -> None:
    """CP@k a day of the stream's scores against the labels the simulation knows (k = the daily capacity)."""
    from kawa.apps.fraud.metrics import card_precision_at_k

    rows = np.array(sorted(i for i in tally.scores if 0 <= i < len(tx)), dtype=np.int64)
    if len(rows) == 0 or k == 0:
        return
    scores = np.array([tally.scores[int(i)] for i in rows], dtype=np.float64)
    cp = card_precision_at_k(tx.day[rows], tx.customer_id[rows], scores, tx.is_fraud[rows], k=k)
    daily = ", ".join(f"{v:.2f}" for v in cp.daily[-7:])
    console.print(f"CP@{k} of the stream's scores (true labels): mean {cp.mean:.3f} over {len(cp.daily)} days "
                  f"(last days: {daily}); {cp.detected} compromised cards in the daily top {k}")  # fmt: skip


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _line(tally: Tally, replay: Any, started: float) -> None:
    a, st = tally.actions, replay.stats
    console.print(
        f"{time.monotonic() - started:5.1f} s · day {(st.by_day and max(st.by_day)) or 0} · sent {st.payments:,} · "
        f"decided {tally.decided:,} (blocked {a['block']:,}, investigated {a['investigate']:,}, passed "
        f"{a['pass']:,}) · dead-lettered {tally.dead:,} · outcomes {st.outcomes:,} · p50 {tally.p50_ms():.2f} ms"
    )


def _summary(tally: Tally, replay: Any, started: float, running: Any) -> None:
    st, wall = replay.stats, time.monotonic() - started
    console.print(
        f"[bold]summary[/]: sent {st.payments:,} payments in {wall:.1f} s ({st.payments / max(wall, 1e-9):,.0f}/s), "
        f"decided {tally.decided:,}, dead-lettered {tally.dead:,}; blocked {tally.actions['block']:,}, "
        f"investigated {tally.actions['investigate']:,}, passed {tally.actions['pass']:,}; "
        f"{st.outcomes:,} outcomes ({st.cases:,} cases opened); p50 latency {tally.p50_ms():.2f} ms"
    )
