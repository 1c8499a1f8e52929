"""``kawa worker --monitor`` on Apache Kafka (issue #13): two worker processes share the decisions of four models over
two partitions; one is SIGKILLed mid-stream, the other takes its partition over. Afterwards the monitoring events
are those of a single-worker run over the same decisions: the same ids, each once, with the same content."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kawa.config import KawaConfig, load_config
from kawa.log import open_log
from kawa.log.base import EventLog, TopicSpec
from kawa.log.partitioner import partition_for_key
from kawa.monitor.service import MonitorConfig
from kawa.monitor.status import ALERT_EVENT, RESOLVED_EVENT, WINDOW_EVENT, read_events
from kawa.monitor.worker import MonitorWorker
from tests.monitor.test_service import reference
from tests.monitor.test_worker import MODELS, PARTITIONS, SHIFTED, assert_same_events, segment, write
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
# What the workers' command line below configures (the CLI's defaults otherwise).
TEMPLATE = MonitorConfig("*", pane_s=300.0, panes=1, window_size=250, window_arl0=100.0, sequential_arl0=1e6)


class Worker:
    """One ``kawa worker --monitor`` process; what it logs goes to a file (its assignment is read from there)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.output = directory / f"{name}.log"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=directory, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def owned(self, topic: str) -> set[int]:
        """The partitions it holds now, as its log says (replayed on assignment, then perhaps revoked)."""
        held: set[int] = set()
        name = re.escape(topic)
        for found in re.finditer(rf"replaying {name}\[(\d+)\]|{name}\[(\d+)\] revoked", self.text()):
            if found.group(1) is not None:
                held.add(int(found.group(1)))
            else:
                held.discard(int(found.group(2)))
        return held

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An MLflow (sqlite) registry with the four models, each version 1 registered from one run that logged the
    reference profile."""
    from kawa.ml import tracking
    from kawa.ml.registry import Registry
    from kawa.monitor.profiles import log_reference_profile

    env = {
        "KAWA_ML__TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "KAWA_ML__ARTIFACT_ROOT": (tmp_path / "artifacts").as_uri(),
        "HOME": str(tmp_path / "home"),
        "MLFLOW_CONFIG_DIR": str(tmp_path / "home" / "mlflow"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = load_config()
    registry = Registry(config, publish=False)
    ref = reference()
    with tracking.run("monitor-worker-test", config=config) as run:
        log_reference_profile(run, ref)
        for model in MODELS:
            assert registry.register(f"runs:/{run.run_id}/kawa", model, run_id=run.run_id) == 1
    registry.close()
    yield env


@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_two_monitor_workers_one_sigkilled_write_what_a_single_worker_writes(
    kafka_bootstrap: str, registry_env: dict[str, str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    decisions, alerts, group = f"mw-decisions-{tag}", f"mw-alerts-{tag}", f"mw-group-{tag}"
    log_uri = f"kafka://{kafka_bootstrap}"
    log: EventLog = open_log(log_uri, KawaConfig(home=tmp_path / ".kawa"))
    log.create_topic(TopicSpec(decisions, PARTITIONS, retention_ms=None))
    env = {**os.environ, **registry_env, "PYTHONPATH": str(ROOT / "src"), "KAWA_HOME": str(tmp_path / ".kawa")}
    argv = [sys.executable, "-m", "kawa.cli", "--log", log_uri, "worker", "--monitor", "--decisions-topic", decisions,
            "--alerts-topic", alerts, "--group", group, "--session-timeout-ms", "3000", "--pane", "300", "--panes",
            "1", "--window-size", "250", "--window-arl0", "100", "--sequential-arl0", "1e6"]  # fmt: skip
    workers = [Worker(name, argv, env, tmp_path) for name in ("first", "second")]
    try:
        wait_for(lambda: all(len(w.owned(decisions)) == 1 for w in workers), timeout=120,
                 what="each worker to hold one partition")  # fmt: skip

        def caught_up() -> bool:
            lag = log.lag(group, [decisions])
            return len(lag) == PARTITIONS and all(row.lag == 0 and row.committed for row in lag)

        write(log, segment(0, 1000, seed=1), decisions)
        wait_for(caught_up, timeout=120, what="both workers to process the first segment")
        # The victim holds the shifted model: it raises the shift's first alerts, then it is killed in the middle
        # of the shift while decisions arrive, and the stream goes on while its partition is still assigned to it.
        shifted = partition_for_key(SHIFTED.encode(), PARTITIONS)
        victim = next(w for w in workers if w.owned(decisions) == {shifted})
        survivor = next(w for w in workers if w is not victim)
        assert {e.model for e in read_events(log, alerts)} == set(MODELS), "both workers wrote windows"
        write(log, segment(1000, 600, seed=2), decisions)  # the shift begins at second 1200
        wait_for(caught_up, timeout=120, what="both workers to process the second segment")
        before = read_events(log, alerts)
        raised = {e.id for e in before if e.type == ALERT_EVENT}
        assert raised and {e.model for e in before if e.type == ALERT_EVENT} == {SHIFTED}, "the victim raised alerts"
        write(log, segment(1600, 200, seed=3), decisions)  # killed while it reads these, at whichever point
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        write(log, segment(1800, 1200, seed=4), decisions)  # the rest of the shift, then back to the reference
        wait_for(lambda: survivor.owned(decisions) == {0, 1}, timeout=60, what="the survivor to take the partition")
        wait_for(caught_up, timeout=120, what="the survivor to process every decision")
        assert survivor.alive(), survivor.text()[-3000:]
        survivor.proc.send_signal(signal.SIGTERM)
        assert survivor.proc.wait(timeout=60) == 0, survivor.text()[-3000:]
        assert "event(s) written to" in survivor.text()
        events = read_events(log, alerts)
        # The survivor went on from the victim's state: it resolved the alerts the victim raised.
        assert raised <= {e.data["alert_id"] for e in events if e.type == RESOLVED_EVENT}

        # The same decisions through one worker alone (in this process, its own group and alerts topic).
        ref = reference()
        single = MonitorWorker(log, dataclasses.replace(TEMPLATE, decisions_topic=decisions,
                                                        alerts_topic=f"{alerts}-single"),
                               lambda _model, version: ref if version == 1 else None,
                               group=f"{group}-single").start()  # fmt: skip

        def single_done() -> bool:
            single.step()
            lag = log.lag(f"{group}-single", [decisions])
            return len(single.owned) == PARTITIONS and len(lag) == PARTITIONS and all(r.lag == 0 for r in lag)

        try:
            wait_for(single_done, timeout=120, what="the single worker to process every decision", interval=0.0)
        finally:
            single.close()
        expected = read_events(log, f"{alerts}-single")
        assert_same_events(events, expected)
        assert {e.model for e in expected if e.type == ALERT_EVENT} == {SHIFTED}
        assert {e.model for e in expected if e.type == WINDOW_EVENT} == set(MODELS)
    finally:
        for w in workers:
            if w.alive():
                w.proc.kill()
                w.proc.wait(timeout=30)
        log.close()
