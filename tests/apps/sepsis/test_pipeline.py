"""The sepsis app's functions: FHIR in, features and scores, decision records, alerts — one event at a time
through ``kawa.testing.invoke``, then end to end on the embedded log with the app started as a plugin."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.apps.runtime import start_app
from kawa.apps.sepsis import fhir
from kawa.apps.sepsis.alerts import AlertPolicy, run
from kawa.apps.sepsis.app_settings import SepsisSettings
from kawa.apps.sepsis.events import pseudonym
from kawa.apps.sepsis.features import FeatureState, features, update
from kawa.apps.sepsis.metrics import bedside_scores
from kawa.apps.sepsis.outcomes import epoch_s, outcome_events, publish
from kawa.apps.sepsis.pipeline import SCORE_NAMES, build_app, scores_of
from kawa.apps.sepsis.plugin import plugin
from kawa.apps.sepsis.settings import SimSettings
from kawa.apps.sepsis.sim import Observation, Simulation, iter_observations, simulate
from kawa.config import load_config
from kawa.deadletter import read_reason
from kawa.evaluation.spec import Arm, ExperimentSpec
from kawa.events import from_record
from kawa.events.cloudevents import to_kafka
from kawa.platform import Platform
from kawa.testing import cloud_event, invoke
from tests.waiting import wait_for

KEY = SepsisSettings().key()
FHIR_TYPE = "dev.kawa.fhir.observation"


def alias(reference: str) -> str:
    return pseudonym(reference, KEY)


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate(SimSettings(patients=6, hours=3, seed=4))


def charted(app: Any, message: Any) -> Any:
    out = invoke(app.get("ingest"), cloud_event(FHIR_TYPE, message))
    assert out.outcome == "ok", out.reason
    return out


def test_a_bundle_is_charted_per_pseudonymised_patient_and_scored_like_the_batch_features(small: Simulation) -> None:
    app = build_app(SepsisSettings(threshold=0))
    rows = list(iter_observations(small.observations))
    ingested = charted(app, fhir.encode_bundle(rows))
    events = ingested.emitted_to("sepsis.charted")
    patients = sorted({o.patient for o in rows})
    assert sorted(e.get_data()["patient"] for e in events) == sorted(alias(f"Patient/sim-{p}") for p in patients)
    by_alias = {alias(f"Patient/sim-{p}"): p for p in patients}
    for event in events:
        scored = invoke(app.get("score"), event)
        assert scored.outcome == "ok", scored.reason
        who = by_alias[event.get_data()["patient"]]
        state = FeatureState()
        for o in rows:
            if o.patient == who:
                state = update(state, o)
        (decision,) = scored.emitted_to("decisions")
        d = decision.get_data()
        assert d["entity"] == event.get_data()["patient"] and d["model"] == "news2" and d["action"] == "alert"
        want = dict(zip(SCORE_NAMES, scores_of(features(state)), strict=True))
        assert {k: d["features"][k] for k in SCORE_NAMES} == want and d["score"] == want["news2"]
        assert d["features"]["hr_last"] == features(state)[0]
        (alert,) = scored.emitted_to("sepsis.alerts")
        assert alert.get_data()["patient"] == d["entity"] and alert.get_data()["time"] == epoch_s(state.now)
        text = json.dumps([e.get_data() for _t, e in scored.emitted])
        assert "sim-" not in text and "Patient/" not in text


def test_a_single_observation_is_charted_too(small: Simulation) -> None:
    o = next(iter_observations(small.observations))
    out = charted(build_app(), fhir.encode(o))
    (event,) = out.emitted_to("sepsis.charted")
    assert event.get_data()["rows"] == [[o.time_h, o.code, o.value]]


BAD: list[tuple[Any, str]] = [
    (b"{not json", "the message is not JSON"),
    ({"resourceType": "Patient", "id": "sim-77"}, "resourceType is not Observation"),
    ({"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": fhir.LOINC, "code": "0000-0"}]},
      "subject": {"reference": "Patient/sim-77"}, "effectiveDateTime": "2026-12-01T00:00:00Z",
      "valueQuantity": {"value": 1}}, "unknown LOINC code"),
]


@pytest.mark.parametrize(("message", "reason"), BAD)
def test_bad_fhir_is_dead_lettered_with_a_reason_that_names_no_patient(message: Any, reason: str) -> None:
    out = invoke(build_app().get("ingest"), cloud_event(FHIR_TYPE, message))
    assert out.outcome == "dead-lettered" and out.reason_code in ("invalid-input", "undecodable"), out.reason
    assert out.reason is not None and reason in out.reason and "sim-77" not in out.reason
    assert out.emitted == []


def test_a_bundle_with_one_bad_entry_is_refused_whole(small: Simulation) -> None:
    bundle = fhir.encode_bundle(list(iter_observations(small.observations))[:5])
    bundle["entry"][3]["resource"]["valueQuantity"]["value"] = "sim-77"
    out = invoke(build_app().get("ingest"), cloud_event(FHIR_TYPE, bundle))
    assert out.outcome == "dead-lettered" and out.emitted == []
    assert out.reason is not None and "entry 3: non-numeric value" in out.reason and "sim-77" not in out.reason


def test_a_model_scores_when_one_is_set_and_a_silent_arm_shows_no_alert(small: Simulation) -> None:
    s = SepsisSettings(score_source="model", model_name="risk", experiment="silent-arm", model_threshold=0.5)
    app = build_app(s)
    events = charted(app, fhir.encode_bundle(list(iter_observations(small.observations)))).emitted_to("sepsis.charted")
    spec = ExperimentSpec(
        name="silent-arm", model="risk", unit="patient", salt="s", primary_metric="sepsis", metric_kind="proportion",
        maturity_window_s=48 * 3600, horizon=10_000,
        arms=(Arm("shown", 0.5, model="risk@champion"), Arm("silent", 0.5, holdout=True)),
    )  # fmt: skip
    inputs: list[int] = []
    arms = {}

    def risk(x: Any) -> list[float]:
        inputs.append(np.shape(x)[1])
        return [0.9]

    for event in events:
        out = invoke(app.get("score"), event, models={"risk@champion": risk}, experiments=[spec])
        assert out.outcome == "ok", out.reason
        d = out.emitted_to("decisions")[0].get_data()
        arms[d["entity"]] = d["arm"]
        assert d["experiment"] == "silent-arm" and d["action"] == "alert" and d["score"] == 0.9
        assert len(out.emitted_to("sepsis.alerts")) == (d["arm"] == "shown")
        scored = out.emitted_to("sepsis.scores")[0].get_data()
        assert scored["verdict"] == ("alert" if d["arm"] == "shown" else "silent")
    assert set(arms.values()) == {"shown", "silent"} and set(inputs) == {105}


# --- end to end on the embedded log -------------------------------------------------------------------


@dataclass
class E2E:
    sim: Simulation
    messages: int
    expected_alerts: set[tuple[str, float]]
    groups: int
    topics: dict[str, list[Any]]
    logs: str
    board: dict[str, Any]


def read(platform: Platform, topic: str, want: int, timeout: float = 90.0) -> list[Any]:
    """The records of ``topic`` from the beginning, once ``want`` arrived (or at the deadline)."""
    consumer = platform.log.consumer(f"test-{topic}-{time.monotonic_ns()}", [topic], auto_offset_reset="earliest")
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            got += consumer.poll(timeout=0.2, max_records=1000)
    finally:
        consumer.close()
    return got


def bundles(sim: Simulation) -> Iterator[tuple[int, list[Observation]]]:
    """One Bundle per patient and simulated hour, in time order (what a ward's interface engine sends)."""
    rows = list(iter_observations(sim.observations))
    groups: dict[tuple[int, int], list[Observation]] = {}
    for o in rows:
        groups.setdefault((int(o.time_h), o.patient), []).append(o)
    for (_hour, patient), obs in sorted(groups.items()):
        yield patient, obs


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    sim = simulate(SimSettings(patients=200, hours=3, seed=16))
    settings = {"threshold": 6, "budget_per_h": 10_000}
    home = tmp_path_factory.mktemp("sepsis-e2e") / ".kawa"
    config = load_config(None, env={}, home=str(home), portal={"enabled": False}, ml={"scheduler": False})
    platform = Platform(config)
    handler = _Capture()
    logging.getLogger("kawa").addHandler(handler)
    try:
        start_app(platform, plugin, settings)
        producer = platform.log.producer()
        groups = 0
        for _patient, obs in bundles(sim):
            key, value, headers = to_kafka(cloud_event(FHIR_TYPE, fhir.encode_bundle(obs)))
            producer.produce("sepsis.observations", value, key=key, headers=headers)
            groups += 1
        bad = [b"{oops", json.dumps({"resourceType": "Observation", "subject": {"reference": "Patient/sim-4242"}})]
        for value in bad:
            key, _v, headers = to_kafka(cloud_event(FHIR_TYPE, value.encode() if isinstance(value, str) else value))
            producer.produce("sepsis.observations", value if isinstance(value, bytes) else value.encode(),
                             key=key, headers=headers)  # fmt: skip
        producer.flush()
        producer.close()
        publish(platform.log, "outcomes", outcome_events(sim.outcomes, alias))
        # what the alerts must be: NEWS2 on each hour's last values, the same policy, per patient in time order
        pat, t, scores = bedside_scores(sim.observations)
        key_ = pat * 1000 + np.floor(t).astype(np.int64)  # (patient, hour)
        order = np.lexsort((t, pat))
        k = key_[order]
        ends = order[np.append(k[:-1] != k[1:], True)]
        ends = ends[np.argsort(t[ends], kind="stable")]
        policy = AlertPolicy(6, 12.0, 10_000)
        rows = ((alias(f"Patient/sim-{pat[i]}"), float(t[i]), float(scores["news2"][i])) for i in ends)
        expected = {(p, round(epoch_s(u), 3)) for p, u, v in run(policy, rows) if v.alert}
        topics = {
            "decisions": read(platform, "decisions", groups),
            "sepsis.alerts": read(platform, "sepsis.alerts", len(expected)),
            "sepsis.census": read(platform, "sepsis.census", 200),
            "sepsis.observations.dlq": read(platform, "sepsis.observations.dlq", 2),
            "sepsis.charted": read(platform, "sepsis.charted", groups),
            "outcomes": read(platform, "outcomes", 200),
        }
        board = _board(platform, want_alerts=len(expected))
        yield E2E(sim, groups + 2, expected, groups, topics, "\n".join(handler.lines), board)
    finally:
        logging.getLogger("kawa").removeHandler(handler)
        platform.stop()


def _board(platform: Platform, want_alerts: int) -> dict[str, Any]:
    """The app's board as the portal serves it to an admin, once its alert counter caught up."""
    from fastapi.testclient import TestClient

    from kawa.portal.app import create_app
    from kawa.portal.permissions import Role
    from kawa.portal.runtime import Portal

    portal = Portal(platform)
    try:
        portal.users.add_user("admin-user", Role.ADMIN, "correct horse battery")
        _info, token = portal.users.create_token("admin-user", "test")
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(portal), base_url="http://127.0.0.1") as client:
            deadline, board = time.monotonic() + 60, {}
            while time.monotonic() < deadline:
                portal.sampler.tick()
                board = client.get("/api/apps/sepsis/board", headers=headers).json()
                counts = {c["label"]: c["value"] for c in board.get("census", {}).get("counts", [])}
                if counts.get("alerts") == want_alerts and counts.get("census") == 200:
                    break
            board["_alerts_rows"] = client.get("/api/apps/sepsis/events/sepsis.alerts", headers=headers).json()
            board["_page"] = client.get("/apps/sepsis", headers=headers).status_code
        return board
    finally:
        portal.stop()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_every_hour_of_every_patient_is_decided_and_the_alerts_are_the_batch_policys(e2e: E2E) -> None:
    decisions = [from_record(r).get_data() for r in e2e.topics["decisions"]]
    assert len(decisions) == e2e.groups and len({d["event"]["id"] for d in decisions}) == e2e.groups
    assert {d["model"] for d in decisions} == {"news2"}
    alerts = [from_record(r).get_data() for r in e2e.topics["sepsis.alerts"]]
    assert len(e2e.expected_alerts) >= 5
    assert {(a["patient"], round(a["time"], 3)) for a in alerts} == e2e.expected_alerts
    assert sum(d["action"] == "alert" for d in decisions) == len(alerts)
    assert len(e2e.topics["sepsis.census"]) == 200
    assert all(a["latency_ms"] >= 0 for a in alerts)


def test_no_patient_identifier_leaves_the_ingest_function(e2e: E2E) -> None:
    for topic in ("decisions", "sepsis.alerts", "sepsis.census", "sepsis.charted", "outcomes"):
        for r in e2e.topics[topic]:
            raw = (r.value or b"") + b"".join(v for _k, v in r.headers) + (r.key or b"")
            assert b"sim-" not in raw and b"Patient/" not in raw, topic
    assert "sim-" not in e2e.logs


def test_bad_fhir_is_dead_lettered_with_its_reason(e2e: E2E) -> None:
    reasons = [read_reason(r.headers) for r in e2e.topics["sepsis.observations.dlq"]]
    assert len(reasons) == 2 and all(r is not None for r in reasons)
    messages = sorted(r.message for r in reasons if r is not None)
    assert "status missing" in messages[0] and "not JSON" in messages[1]
    assert all("sim-4242" not in m for m in messages)


def test_the_board_counts_the_census_and_alerts_and_lists_pseudonymised_alerts(e2e: E2E) -> None:
    board = e2e.board
    counts = {c["label"]: c["value"] for c in board["census"]["counts"]}
    assert counts["census"] == 200 and counts["alerts"] == len(e2e.expected_alerts), counts
    assert counts["dead_lettered"] == 2 and counts["scored"] == e2e.groups, counts
    assert board["panels"][:2] == ["census", "alerts"] and board["_page"] == 200
    text = json.dumps(board)
    assert "sim-" not in text and "Patient/" not in text
    aliases = {a for a, _t in e2e.expected_alerts}
    assert any(alias in text for alias in aliases)


def test_outcomes_are_published_by_pseudonym_at_onset_or_discharge(e2e: E2E) -> None:
    outs = [from_record(r).get_data() for r in e2e.topics["outcomes"]]
    assert len(outs) == 200
    septic = [o for o in outs if o["label"] == 1]
    assert len(septic) == int(e2e.sim.outcomes.sepsis.sum()) >= 1
    census = {from_record(r).get_data()["patient"] for r in e2e.topics["sepsis.census"]}
    assert {o["entity"] for o in outs} == census
    assert all(o["observed_at"] >= o["at"] for o in septic)


def test_fhir_posted_to_the_webhook_is_charted_and_a_body_that_is_not_json_refused(
    tmp_path: Path, small: Simulation
) -> None:
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = load_config(None, env={}, home=str(tmp_path / ".kawa"), portal={"enabled": False}, ml={"scheduler": False})
    platform = Platform(config)
    try:
        running = start_app(platform, plugin, {"http_port": port})
        assert running.routes is not None
        url = f"http://127.0.0.1:{port}/fhir"
        obs = [o for o in iter_observations(small.observations) if o.patient == 0][:12]

        def post(body: bytes) -> tuple[int, str]:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/fhir+json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as reply:
                    return int(reply.status), reply.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        def listening() -> bool:  # the route's server binds when its thread opens the source
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, timeout=30, what="the FHIR webhook to listen")
        assert post(json.dumps(fhir.encode_bundle(obs)).encode())[0] == 202
        refused, why = post(b"{Patient/sim-4242")  # refused at the door: the sender gets the reason
        assert refused == 400 and "not JSON" in why and "sim-4242" not in why
        (decision,) = [from_record(r).get_data() for r in read(platform, "decisions", 1)]
        assert decision["entity"] == alias("Patient/sim-0") and decision["model"] == "news2"
    finally:
        platform.stop()


def test_fhir_resources_validation_catches_what_the_decoder_lets_through(small: Simulation) -> None:
    res = fhir.encode(next(iter_observations(small.observations)))
    res["id"] = "sim-77 is no FHIR id!"
    strict = invoke(build_app().get("ingest"), cloud_event(FHIR_TYPE, res))
    assert strict.outcome == "dead-lettered" and strict.reason is not None
    assert "not a valid FHIR R4 Observation: id" in strict.reason and "sim-77" not in strict.reason
    lax = invoke(build_app(SepsisSettings(fhir_validate=False)).get("ingest"), cloud_event(FHIR_TYPE, res))
    assert lax.outcome == "ok" and len(lax.emitted_to("sepsis.charted")) == 1


def test_a_redelivered_chart_gets_the_same_alert_and_is_not_charted_twice(small: Simulation) -> None:
    from kawa.apps.sepsis.alerts import AlertPolicy as Policy
    from kawa.apps.sepsis.pipeline import Ward

    ward = Ward(Policy(0.0, suppress_h=12, budget_per_h=100))
    app = build_app(SepsisSettings(threshold=0), ward=ward)
    bundle = fhir.encode_bundle(list(iter_observations(small.observations)))
    event = charted(app, bundle).emitted_to("sepsis.charted")[0]
    first = invoke(app.get("score"), event)
    patient = event.get_data()["patient"]
    state = ward.states[patient]
    again = invoke(app.get("score"), event)  # the host retrying after a failed flush
    assert ward.states[patient] is state and ward.recent == (state.now,)
    ids = [[(t, e.get_id()) for t, e in out.emitted] for out in (first, again)]
    assert ids[0] == ids[1] and ("sepsis.alerts" in {t for t, _ in ids[1]})
    assert again.emitted_to("sepsis.alerts")[0].get_data()["patient"] == patient


def test_kawa_worker_finds_the_app_by_import_string() -> None:
    from kawa.functions.app import load_app

    app = load_app("kawa.apps.sepsis.pipeline:app")
    assert set(app.functions) == {"ingest", "score"} and app.get("score").ordered_by_key
