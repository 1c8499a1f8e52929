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
from kawa.monitor.errors import MonitorError
from kawa.monitor.join import JoinConfig
from kawa.monitor.outcomes import publish
from kawa.monitor.records import DecisionRecord, OutcomeEvent
from kawa.monitor.service import Monitor, MonitorConfig, MonitorService
from kawa.monitor.sketch import Profile, build_profile
from kawa.monitor.status import (
    ALERT_EVENT,
    PERFORMANCE_EVENT,
    RESOLVED_EVENT,
    WINDOW_EVENT,
    MonitorEvent,
    read_events,
    status,
)

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


def test_an_alert_is_deduplicated_then_resolved_and_a_restart_writes_nothing_twice(log: EventLog, ref: Profile) -> None:
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


def test_matured_performance_matches_sklearn_and_checks_the_label_free_estimate(log: EventLog, ref: Profile) -> None:
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


def test_the_window_table_equals_scipy_and_the_textbook_formulas(log: EventLog, ref: Profile) -> None:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency, ks_2samp

    write(log, decisions(700, seed=12, shift=0.3))
    svc = service(log, ref)
    svc.step()
    svc.close()
    row = next(e for e in read_events(log) if e.type == WINDOW_EVENT).data["drift"]["a"]
    sketch = ref.features["a"]
    p = np.asarray(sketch.counts) / sketch.observed
    q = np.asarray(row["counts"]) / sum(row["counts"])
    pf, qf = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert row["psi"] == pytest.approx(float(np.sum((qf - pf) * np.log(qf / pf))), rel=1e-12)
    assert row["js"] == pytest.approx(float(jensenshannon(p, q, base=2)), rel=1e-9)
    positions = np.asarray(sketch.positions)  # ks on the samples expanded at their bin positions
    ks = ks_2samp(np.repeat(positions, sketch.counts), np.repeat(positions, row["counts"]), method="asymp")
    assert row["ks"] == pytest.approx(ks.statistic, abs=1e-12) and row["ks_p"] == pytest.approx(ks.pvalue, rel=1e-6)
    chi2 = chi2_contingency(np.array([sketch.counts, row["counts"]]), correction=False)
    assert row["chi2"] == pytest.approx(chi2.statistic, rel=1e-9)
    assert row["n_live"] == 300 and row["n_reference"] == 4000


def test_false_alarms_stay_within_the_budget_and_shifts_are_found_across_seeds(ref: Profile) -> None:
    """Seeded simulation on the pure core: 12 stationary streams of 3,000 records (108 tested windows against a
    budget of one false alarm per 1,000 windows, 36,000 records against one per 10^6 for the CUSUMs: 0.14 false
    alarms expected) raise at most one alert (these seeds: one, a CUSUM on ``c``; 60 streams of 20,000 records gave
    the same CUSUMs 2 false alarms in 1.2 M records), and the same streams with a 1 sd shift in one feature after
    1,500 records are all alerted by both detectors, on that feature only."""
    from kawa.monitor.service import Monitor

    quiet, found, delays = 0, 0, []
    for seed in range(12):
        core = Monitor(CONFIG, lambda version: ref)
        stationary = core.add(decisions(3000, seed=100 + seed))
        quiet += sum(e.type == ALERT_EVENT for e in stationary)
        core = Monitor(CONFIG, lambda version: ref)
        shifted = core.add(decisions(1500, seed=200 + seed) + decisions(1500, seed=300 + seed, start=1500, shift=1.0))
        alerts = [e for e in shifted if e.type == ALERT_EVENT]
        found += {e.data["detector"] for e in alerts} == {"window", "sequential"}
        delays += [e.data["window"]["last_record"] - 1500 for e in alerts if e.data["detector"] == "sequential"]
        assert all(e.data["features"] == ["a"] for e in alerts)
    assert quiet <= 1 and found == 12
    assert 0 < float(np.median(delays)) < 60


def test_a_restarted_service_with_outcomes_rebuilds_the_join_and_repeats_nothing(log: EventLog, ref: Profile) -> None:
    records = decisions(600, seed=13)
    write(log, records)
    log.create_topic(TopicSpec("outcomes", 1, retention_ms=None), exist_ok=True)
    producer = log.producer()
    for r in records[:500]:
        outcome = OutcomeEvent(r.decided_at + 10, ref=r.ref, label=int((r.score or 0.0) > 0.5))
        publish(producer, "outcomes", outcome.to_event("t"))
    producer.close()
    config = MonitorConfig(MODEL, pane_s=300.0, panes=1, window_size=250, window_arl0=100.0, sequential_arl0=None,
                           join=JoinConfig(horizon=60.0), cohort_s=10_000.0, bootstrap=0)  # fmt: skip
    first = service(log, ref, config)
    written = first.step()
    first.close()
    second = service(log, ref, config)
    assert second.step() == []
    assert second.core.tracks[1] is not None and len(second.core.tracks[1].pending) == 60  # not the 540 matured
    second.close()
    assert len(read_events(log)) == len(written) and sum(e.type == PERFORMANCE_EVENT for e in written) == 1


def test_run_steps_until_stopped(log: EventLog, ref: Profile) -> None:
    import threading

    write(log, decisions(300, seed=14))
    svc = service(log, ref)
    stop, seen = threading.Event(), []

    def on_events(events: list[MonitorEvent]) -> None:
        seen.extend(events)
        if any(e.type == ALERT_EVENT for e in events):
            stop.set()

    worker = threading.Thread(target=svc.run, args=(stop,), kwargs={"interval_s": 0.05, "on_events": on_events})
    worker.start()
    write(log, decisions(900, seed=15, start=300, shift=1.5))  # arrives while it runs
    worker.join(timeout=60)
    stopped = not worker.is_alive()
    stop.set()
    svc.close()
    assert stopped and {e.data["detector"] for e in seen if e.type == ALERT_EVENT} >= {"sequential"}
    assert [e.id for e in read_events(log)] == [e.id for e in seen]


def test_an_offline_run_keeps_the_profile_in_the_job_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: Profile
) -> None:
    import json

    from kawa.config import load_config
    from kawa.ml import tracking
    from kawa.monitor.profiles import log_reference_profile

    monkeypatch.setenv("KAWA_ML__TRACKING", "off")
    monkeypatch.setenv("KAWA_JOB_DIR", str(tmp_path / "job"))
    (tmp_path / "job").mkdir()
    with tracking.run("offline", config=load_config()) as run:
        path = log_reference_profile(run, ref)
    assert path == str(tmp_path / "job" / "kawa" / "reference_profile.json")
    assert Profile.from_json(Path(path).read_text()) == ref
    lines = [json.loads(line) for line in (tmp_path / "job" / "tracking.jsonl").read_text().splitlines()]
    assert {"kind": "artifact", "data": {"path": path}}.items() <= next(
        x for x in lines if x["kind"] == "artifact"
    ).items()


def test_in_exact_mode_windows_are_tested_and_tabled_on_raw_values(log: EventLog) -> None:
    """A profile that keeps its raw values: the windowed KS test alarms on the planted shift with the exact
    statistic, and every window's drift table has KS and Wasserstein equal to scipy's on that window's values."""
    from scipy.stats import ks_2samp, wasserstein_distance

    rng = np.random.default_rng(0)
    ref_values = {f: rng.normal(size=4000) for f in FEATURES}
    exact_ref = build_profile(ref_values, samples=True)
    records = decisions(1500, seed=1) + decisions(1500, seed=2, start=1500, shift=1.0)
    write(log, records)
    config = MonitorConfig(MODEL, pane_s=300.0, panes=1, window_size=250, window_arl0=100.0, statistic="ks",
                           sequential_arl0=None, window_sample_cap=400)  # fmt: skip
    svc = service(log, exact_ref, config)
    svc.step()
    svc.close()
    events = read_events(log)
    (alert,) = [e for e in events if e.type == ALERT_EVENT]
    assert alert.data["features"] == ["a"] and alert.data["window"]["start"] >= T0 + 1200
    (evidence,) = alert.data["evidence"]
    assert evidence["statistic"] == "ks" and evidence["value"] >= evidence["threshold"] > 0.1
    tables = [e for e in events if e.type == WINDOW_EVENT]
    assert len(tables) == 9
    for table in (tables[0], tables[-1]):
        start = table.data["window"]["start"]
        values = np.array([r.features["a"] for r in records if start <= r.decided_at < start + 300])
        row = table.data["drift"]["a"]
        assert row["exact"] and row["n_live"] == values.size == 300
        assert row["ks"] == pytest.approx(ks_2samp(ref_values["a"], values).statistic, abs=1e-12)
        w = wasserstein_distance(ref_values["a"], values) / np.std(ref_values["a"])
        assert row["normed_wasserstein"] == pytest.approx(w, rel=1e-9)
    assert tables[-1].data["drift"]["a"]["ks"] > 0.3 > tables[0].data["drift"]["a"]["ks"]
    with pytest.raises(MonitorError, match="window_sample_cap"):
        small = MonitorConfig(MODEL, window_size=500, window_sample_cap=400)
        Monitor(small, lambda version: exact_ref).track(1)
