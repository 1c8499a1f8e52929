"""The fraud app on the platform: replayed payments through the function host on the embedded log, end to end;
and ``kawa demo fraud`` as a user runs it."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.apps.fraud.labels import chargebacks
from kawa.apps.fraud.pipeline import build_pipeline
from kawa.apps.fraud.plugin import plugin
from kawa.apps.fraud.replay import Replay
from kawa.apps.fraud.settings import FraudSettings
from kawa.apps.fraud.sim import Simulation
from kawa.apps.runtime import start_app
from kawa.config import load_config
from kawa.deadletter import read_reason
from kawa.log.base import Consumer, EventLog, Record
from kawa.monitor.join import JoinConfig, JoinState, step
from kawa.monitor.records import DecisionRecord, OutcomeEvent, decode
from kawa.platform import Platform
from tests.waiting import wait_for

DAY = 86_400


def amount_scorer(features: Any) -> float:
    return min(1.0, float(features[0]) / 160.0)


class Tails:
    """One consumer per topic, read from the beginning, keeping what it read (a Kafka consumer needs a moment
    to join its group: a fresh one per read could see nothing yet)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.consumers: dict[str, Consumer] = {}
        self.records: dict[str, list[Record]] = {}

    def open(self, *topics: str) -> None:
        """Subscribe to ``topics`` now, so that their consumers join their groups side by side."""
        for topic in topics:
            group = f"test-{topic}-{uuid.uuid4().hex[:8]}"
            self.consumers[topic] = self.log.consumer(group, [topic], auto_offset_reset="earliest")
            self.records[topic] = []

    def __call__(self, topic: str) -> list[Record]:
        if topic not in self.consumers:
            self.open(topic)
        while batch := self.consumers[topic].poll(timeout=0.2, max_records=10_000):
            self.records[topic].extend(batch)
        return list(self.records[topic])

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
def test_replayed_payments_are_decided_end_to_end(
    backend: str, small_sim: Simulation, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On the embedded log and on Apache Kafka (the session's test broker)."""
    tx = small_sim.tx.take(np.flatnonzero((small_sim.tx.day < 5) & (small_sim.tx.customer_id < 60)))
    run = uuid.uuid4().hex[:8]  # topics of their own: a shared broker keeps other runs' topics
    names = {f: f"{getattr(FraudSettings(), f)}-{run}" for f in FraudSettings.model_fields if f.endswith("_topic")}
    s = FraudSettings(capacity=3, explore=0.05, explore_capacity=1, first_threshold=0.3, block_at=0.9, **names)
    built: dict[str, Any] = {}

    def functions(settings: FraudSettings, config: Any) -> Any:
        built["pipe"] = build_pipeline(settings, scorer=amount_scorer)
        return built["pipe"].app

    log = {"uri": f"kafka://{request.getfixturevalue('kafka_bootstrap')}"} if backend == "kafka" else {}
    config = load_config(None, env={}, home=str(tmp_path / ".kawa"), portal={"enabled": False},
                         ml={"scheduler": False}, log=log)  # fmt: skip
    platform = Platform(config)
    tails = Tails(platform.log)
    try:
        running = start_app(platform, replace(plugin, functions=functions), s.model_dump())
        assert running.board is not None and running.board.dead_letter_topics == (s.dead_letter_topic,)
        tails.open(*names.values())
        stats = Replay(platform.log, s, tx, chargebacks(tx, median_days=1, seed=0), speed=float("inf"),
                       corrupt=0.02, seed=4).run()  # fmt: skip
        assert stats.payments == len(tx) and stats.corrupt > 0
        wait_for(lambda: len(tails(s.decisions_topic)) + len(tails(s.dead_letter_topic)) >= len(tx), 180)
        wait_for(lambda: len(tails(s.records_topic)) >= len(tx) - stats.corrupt, 60)
        wait_for(lambda: len(tails(s.outcomes_topic)) >= stats.outcomes, 60)
        decisions = [json.loads(r.value or b"{}") for r in tails(s.decisions_topic)]
        dead = tails(s.dead_letter_topic)
        assert len(decisions) == len(tx) - stats.corrupt and len(dead) == stats.corrupt
        reasons = [read_reason(r.headers) for r in dead]
        assert all(r is not None and "amount" in r.message for r in reasons), reasons
        by_action = Counter(d["action"] for d in decisions)
        assert by_action["pass"] > by_action["block"] > 0 and by_action["investigate"] > 0
        for topic, action in ((s.blocked_topic, "block"), (s.investigated_topic, "investigate"),
                              (s.passed_topic, "pass")):  # fmt: skip
            wait_for(lambda t=topic, a=action: len(tails(t)) >= by_action[a], 60)  # type: ignore[misc]
            assert len(tails(topic)) == by_action[action]
        cases = Counter(int(d["time"]) // DAY for d in decisions if d["investigate"])
        assert cases and max(cases.values()) <= s.capacity + s.explore_capacity  # the budget holds each day
        explored = [d for d in decisions if d["reason"] == "random exploration"]
        assert explored and {d["propensity"] for d in explored} == {s.explore}
        records = [decode(r) for r in tails(s.records_topic)]
        assert all(isinstance(r, DecisionRecord) for r in records) and len(records) == len(decisions)
        props = {r.ref.id: r.features["action_propensity"] for r in records if isinstance(r, DecisionRecord)}
        assert all(props[d["event"]["id"]] == d["propensity"] for d in decisions)  # recorded for evaluation
        cards = {r.entity for r in records if isinstance(r, DecisionRecord)}
        assert cards <= {s.card(c) for c in range(60)}
        outcomes = [decode(r) for r in tails(s.outcomes_topic)]
        assert len(outcomes) == stats.outcomes > 0 and all(isinstance(o, OutcomeEvent) for o in outcomes)
        assert built["pipe"].state.labels == stats.labels  # every label reached the features
        join = JoinState(JoinConfig(horizon=30 * DAY, by="ref"))  # chargebacks come back through the outcome join
        step(join, [r for r in records if isinstance(r, DecisionRecord)],
             [o for o in outcomes if isinstance(o, OutcomeEvent)], watermark=0.0)  # fmt: skip
        decided = {d["event"]["id"] for d in decisions}
        assert join.counts().joined == sum(o.ref.id in decided for o in outcomes if isinstance(o, OutcomeEvent)
                                           and o.ref is not None) > 0  # fmt: skip
        if backend == "embedded":  # the portal reads the same counts on any log; once is enough
            want = {"transactions": len(tx), "blocked": by_action["block"],
                    "investigated": by_action["investigate"], "passed": by_action["pass"],
                    "dead_lettered": stats.corrupt}  # fmt: skip
            board = board_counts(platform, lambda b: b["decisions"] == want)
            assert board["decisions"] == want and board["labels"]["outcomes"] == stats.outcomes, board
    finally:
        tails.close()
        platform.stop()


def board_counts(
    platform: Platform, ready: Callable[[dict[str, dict[str, int]]], bool], timeout: float = 30.0
) -> dict[str, dict[str, int]]:
    """The fraud board's counters as the portal serves them to an admin, once ``ready`` (or at the deadline)."""
    from fastapi.testclient import TestClient

    from kawa.portal.app import create_app
    from kawa.portal.permissions import Role
    from kawa.portal.runtime import Portal

    portal = Portal(platform)
    try:
        portal.users.add_user("admin-user", Role.ADMIN, "correct horse battery")
        _info, token = portal.users.create_token("admin-user", "test")
        deadline = time.monotonic() + timeout
        with TestClient(create_app(portal), base_url="http://127.0.0.1") as client:
            while True:
                portal.sampler.tick()
                body = client.get("/api/apps/fraud/board", headers={"Authorization": f"Bearer {token}"}).json()
                counts = {n: {c["label"]: c["value"] for c in body[n]["counts"]} for n in ("decisions", "labels")}
                if ready(counts) or time.monotonic() > deadline:
                    return counts
    finally:
        portal.stop()


def test_kawa_demo_fraud_starts_decides_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """From a bare directory: the demo simulates, starts the app, streams, decides; Ctrl-C ends it with a summary.
    The app is installed here through an entry point in a dist-info directory, as the package will declare it."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading

    site = tmp_path / "site" / "kawa_fraud_app-0.1.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: kawa-fraud-app\nVersion: 0.1\n")
    (site / "entry_points.txt").write_text("[kawa.apps]\nfraud = kawa.apps.fraud.plugin:plugin\n")
    path = os.pathsep.join([*filter(None, [os.environ.get("PYTHONPATH")]), str(site.parent)])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200", "PYTHONPATH": path}
    kawa = str(Path(sys.executable).parent / "kawa")
    args = [kawa, "demo", "fraud", "--no-portal", "--rate", "300", "--set", "customers=200"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any(re.search(r"decided [1-9]", line) for line in lines) or proc.poll() is not None, 150)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(lines)  # it finishes what was sent first
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    out = "".join(lines)
    assert "fraud-transactions → score-transactions → fraud-decisions" in out, out
    found = re.search(r"summary: sent ([\d,]+) payments .* decided ([\d,]+), dead-lettered ([\d,]+)", out)
    assert found is not None, out
    sent, decided, dead = (int(g.replace(",", "")) for g in found.groups())
    assert decided > 0 and decided + dead == sent, out  # everything sent was decided or dead-lettered
    assert re.search(r"CP@100 of the stream's scores \(true labels\): mean \d\.\d{3} over \d+ days", out), out
