"""The monitoring service on a real log: planted shifts alert with evidence, stationary streams stay quiet, alerts
are deduplicated and resolved, a restart writes nothing twice, and matured performance agrees with sklearn. (The
reference profile's trip through a real MLflow run is in test_cli.py, with the commands that read it.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.events.ref import EventRef
from kawa.log import open_log
from kawa.log.base import EventLog, TopicSpec
from kawa.monitor.join import JoinConfig
from kawa.monitor.outcomes import publish
from kawa.monitor.records import DecisionRecord, OutcomeEvent
from kawa.monitor.service import MonitorConfig, MonitorService
from kawa.monitor.sketch import Profile, build_profile
from kawa.monitor.status import ALERT_EVENT, PERFORMANCE_EVENT, RESOLVED_EVENT, WINDOW_EVENT, read_events, status

MODEL = "risk"
T0 = 1_800_000_000.0
FEATURES = ("a", "b", "c")


def reference(seed: int = 0, n: int = 4000) -> Profile:
    rng = np.random.default_rng(seed)
    cols = {f: rng.normal(size=n) for f in FEATURES}
    return build_profile({**cols, "ward": rng.choice(["icu", "er", "med"], size=n).tolist()},
                         score=rng.uniform(size=n), categorical=["ward"])  # fmt: skip


def decisions(n: int, *, seed: int, start: int = 0, shift: float = 0.0, version: int = 1) -> list[DecisionRecord]:
    """``n`` decisions, one per second from ``T0 + start``, with feature ``a`` shifted by ``shift`` sd."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 0] += shift
    wards = rng.choice(["icu", "er", "med"], size=n)
    scores = rng.uniform(size=n)
    return [
        DecisionRecord(EventRef("kawa://test", f"e{start + i}"), MODEL, version, f"p{(start + i) % 97}",
                       T0 + start + i, score=float(scores[i]),
                       features={**{f: float(x[i, j]) for j, f in enumerate(FEATURES)}, "ward": str(wards[i])})
        for i in range(n)
    ]  # fmt: skip


def write(log: EventLog, records: list[DecisionRecord], topic: str = "decisions") -> None:
    log.create_topic(TopicSpec(topic, 1, retention_ms=None), exist_ok=True)
    producer = log.producer()
    for r in records:
        publish(producer, topic, r.to_event("kawa://test/fn"))
    producer.close()


CONFIG = MonitorConfig(MODEL, pane_s=300.0, panes=1, window_size=250, window_arl0=1000.0, sequential_arl0=1e6,
                       shift=1.0, sequential_mode="mean")  # fmt: skip


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    opened = open_log(f"embedded:{tmp_path / 'log'}", KawaConfig(home=tmp_path / ".kawa"))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def ref() -> Profile:
    return reference()


def service(log: EventLog, ref: Profile, config: MonitorConfig = CONFIG) -> MonitorService:
    return MonitorService(log, config, lambda version: ref if version == 1 else None).start()


def test_a_planted_shift_raises_one_alert_with_its_evidence(log: EventLog, ref: Profile) -> None:
    write(log, decisions(1500, seed=1) + decisions(1500, seed=2, start=1500, shift=1.0))
    svc = service(log, ref)
    written = svc.step()
    svc.close()
    events = read_events(log)
    assert [e.id for e in events] == [e.id for e in written]
    alerts = [e for e in events if e.type == ALERT_EVENT]
    by = {e.data["detector"]: e for e in alerts}
    assert set(by) == {"window", "sequential"}
    assert sum(e.data["detector"] == "window" for e in alerts) == 1  # the drifted windows alert once
    window = by["window"].data
    assert window["features"] == ["a"] and window["reference_version"] == "risk/1"
    assert window["window"]["start"] >= T0 + 1200 and window["window"]["end"] - window["window"]["start"] == 300
    (evidence,) = window["evidence"]
    assert evidence["statistic"] == "psi" and evidence["value"] >= evidence["threshold"] > 0
    assert evidence["n_reference"] == 4000 and evidence["n_live"] == 300 and evidence["p_value"] < 1e-3
    seq = by["sequential"].data
    assert seq["features"] == ["a"] and seq["evidence"][0]["direction"] == "up"
    assert 1500 < seq["window"]["last_record"] < 1580  # a 1 sd shift is seen within a few dozen records
    assert seq["evidence"][0]["value"] > seq["evidence"][0]["threshold"]
    # The drift table of the windows: PSI of `a` large after the shift, small before, equal to the textbook formula.
    tables = [e for e in events if e.type == WINDOW_EVENT]
    assert len(tables) == 9  # ten 300-second windows, the last still open
    before, after = tables[1].data["drift"], tables[-1].data["drift"]
    assert before["a"]["psi"] < 0.1 < after["a"]["psi"] and after["b"]["psi"] < 0.1
    assert set(after) == {"a", "b", "c", "ward", "<score>"} and after["ward"]["unseen_share"] == 0.0


def test_a_stationary_stream_raises_nothing(log: EventLog, ref: Profile) -> None:
    write(log, decisions(3000, seed=3))
    svc = service(log, ref)
    svc.step()
    svc.close()
    events = read_events(log)
    assert not [e for e in events if e.type in (ALERT_EVENT, RESOLVED_EVENT)]
    assert sum(e.type == WINDOW_EVENT for e in events) == 9
    assert svc.core.records == 3000


def test_an_alert_is_deduplicated_then_resolved_and_a_restart_writes_nothing_twice(
    log: EventLog, ref: Profile
) -> None:
    write(log, decisions(900, seed=4) + decisions(1200, seed=5, start=900, shift=1.0))
    first = service(log, ref)
    first.step()  # the shift is under way: alerts open
    write(log, decisions(2400, seed=6, start=2100))  # back to the reference
    first.step()
    first.close()
    events = read_events(log)
    alerts = [e for e in events if e.type == ALERT_EVENT]
    resolved = [e for e in events if e.type == RESOLVED_EVENT]
    assert sorted(e.data["detector"] for e in alerts) == ["sequential", "window"]
    assert sorted(e.data["alert_id"] for e in resolved) == sorted(e.id for e in alerts)
    window_alert = next(e for e in alerts if e.data["detector"] == "window")
    window_resolved = next(e for e in resolved if e.data["detector"] == "window")
    assert window_resolved.data["window"]["start"] > window_alert.data["window"]["start"]
    assert status(events, MODEL).versions[1].open_alerts == {}
    # A new service over the same log replays the decisions, recomputes the same events and writes none of them.
    second = service(log, ref)
    assert second.step() == []
    write(log, decisions(600, seed=7, start=4500, shift=1.0))  # drift again: a new alert, once
    new = second.step()
    second.close()
    assert sorted(e.data["detector"] for e in new if e.type == ALERT_EVENT) == ["sequential", "window"]
    after = read_events(log)
    assert len({e.id for e in after}) == len(after)
    assert len(after) == len(events) + len(new)
    assert status(after, MODEL).versions[1].open_alerts


def test_versions_are_kept_apart_and_one_without_a_profile_is_counted(log: EventLog, ref: Profile) -> None:
    write(log, decisions(600, seed=8) + decisions(600, seed=9, version=2, shift=2.0))
    svc = service(log, ref)
    svc.step()
    svc.close()
    events = read_events(log)
    assert {e.version for e in events} == {1} and not [e for e in events if e.type == ALERT_EVENT]
    assert svc.core.unprofiled == {2: 600}


def test_matured_performance_matches_sklearn_and_checks_the_label_free_estimate(
    log: EventLog, ref: Profile
) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(10)
    records = decisions(800, seed=11)
    labels = {r.ref: int(rng.uniform() < (r.score or 0.0)) for r in records}  # calibrated scores
    write(log, records)
    log.create_topic(TopicSpec("outcomes", 1, retention_ms=None), exist_ok=True)
    producer = log.producer()
    for r in records[:700]:  # the last 100 get no outcome yet: they are the gap
        publish(producer, "outcomes", OutcomeEvent(r.decided_at + 30, ref=r.ref, label=labels[r.ref]).to_event("t"))
    producer.close()
    config = MonitorConfig(MODEL, pane_s=300.0, panes=1, window_size=250, window_arl0=100.0, sequential_arl0=None,
                           join=JoinConfig(horizon=60.0), cohort_s=10_000.0, bootstrap=50)  # fmt: skip
    svc = service(log, ref, config)
    svc.step()
    svc.close()
    perf = [e for e in read_events(log) if e.type == PERFORMANCE_EVENT]
    assert len(perf) == 1
    data = perf[0].data
    matured = records[:740]  # matured: decided at least horizon before the latest time read (T0 + 799)
    assert data["n"] == len(matured)
    expected = roc_auc_score([labels[r.ref] if i < 700 else 0 for i, r in enumerate(matured)],
                             [r.score for r in matured])  # fmt: skip
    auroc = data["metrics"]["auroc"]
    assert auroc["estimate"] == pytest.approx(expected, abs=1e-12) and auroc["low"] < expected < auroc["high"]
    assert data["assumed_negative"] == 40
    assert data["label_free"]["n"] == 60 and data["label_free"]["assumes_no_concept_drift"] is True
    # Uniform calibrated scores: the expected AUROC is P(s+ > s-) = 5/6; the check compares it with the realised one.
    check = data["label_free_check"]
    assert check["estimated_auroc"] == pytest.approx(5 / 6, abs=0.03)
    assert check["realised_auroc"] == pytest.approx(expected, abs=1e-12)
