"""Cross-project isolation of buckets and topics through the portal's API: list, read, write and delete are
checked as (user, project, action), with the user's role in the project that owns the resource by its prefix."""

from __future__ import annotations

from typing import Any

import pytest

from kawa.log.base import TopicSpec
from kawa.portal.permissions import Role
from kawa.projects.registry import ProjectRegistry
from tests.portal.conftest import bearer

A_BUCKET, B_BUCKET, A_TOPIC, B_TOPIC = "team-a--scans", "team-b--scans", "team-a.events", "team-b.events"


@pytest.fixture
def world(portal: Any, tokens: dict[Role, str]) -> dict[str, dict[str, str]]:
    """team-a, where the global *viewer* is a data engineer; team-b, where nobody but admins may look; and a
    bucket and a topic of each, plus one of ``default``."""
    registry = ProjectRegistry.in_home(portal.config.home)
    registry.create("team-a")
    registry.add_member("team-a", "viewer-user", Role.DATA_ENGINEER)
    registry.create("team-b")
    store, log = portal.platform.store, portal.platform.log
    for bucket in (A_BUCKET, B_BUCKET, "shared-scans"):
        store.create_bucket(bucket)
        store.put(bucket, "a.txt", b"x")
    for topic in (A_TOPIC, B_TOPIC, "plain"):
        log.create_topic(TopicSpec(topic), exist_ok=True)
    return {role.value: bearer(tokens[role]) for role in Role}


def _names(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["name"] for item in response.json()["items"]}


def test_listings_leave_out_other_projects_resources(client: Any, world: dict[str, dict[str, str]]) -> None:
    viewer, engineer, admin = world["viewer"], world["data-engineer"], world["admin"]
    assert {A_BUCKET, "shared-scans"} <= _names(client.get("/api/buckets", headers=viewer))
    assert B_BUCKET not in _names(client.get("/api/buckets", headers=viewer))
    assert not {A_BUCKET, B_BUCKET} & _names(client.get("/api/buckets", headers=engineer))  # no member of either
    assert {A_BUCKET, B_BUCKET} <= _names(client.get("/api/buckets", headers=admin))  # a platform admin
    assert A_TOPIC in _names(client.get("/api/topics", headers=viewer))
    assert not {B_TOPIC} & _names(client.get("/api/topics", headers=viewer))
    assert "plain" in _names(client.get("/api/topics", headers=engineer))


def test_reads_writes_and_deletes_use_the_role_in_the_owning_project(
    client: Any, world: dict[str, dict[str, str]]
) -> None:
    viewer, engineer = world["viewer"], world["data-engineer"]
    # The global viewer is a data engineer in team-a: reads PHI there, writes and deletes there …
    assert client.get(f"/api/buckets/{A_BUCKET}/objects/a.txt", headers=viewer).status_code == 200
    assert client.put(f"/api/buckets/{A_BUCKET}/objects/b.txt", content=b"y", headers=viewer).status_code == 201
    assert client.delete(f"/api/buckets/{A_BUCKET}/objects/b.txt", headers=viewer).status_code == 204
    assert client.get(f"/api/topics/{A_TOPIC}/records", headers=viewer).status_code == 200
    assert client.post("/api/topics", json={"name": "team-a.more", "partitions": 1}, headers=viewer).status_code == 201
    # … and is still a viewer everywhere else: not in team-b, not in default.
    for response in (
        client.get(f"/api/buckets/{B_BUCKET}/objects/a.txt", headers=viewer),
        client.get(f"/api/buckets/{B_BUCKET}/objects", headers=viewer),
        client.put(f"/api/buckets/{B_BUCKET}/objects/b.txt", content=b"y", headers=viewer),
        client.delete(f"/api/buckets/{B_BUCKET}/objects/a.txt", headers=viewer),
        client.get(f"/api/topics/{B_TOPIC}", headers=viewer),
        client.get(f"/api/topics/{B_TOPIC}/records", headers=viewer),
        client.post("/api/topics", json={"name": "team-b.more", "partitions": 1}, headers=viewer),
        client.put("/api/buckets/shared-scans/objects/b.txt", content=b"y", headers=viewer),
    ):
        assert response.status_code == 403, response.text
    refused = client.get(f"/api/buckets/{B_BUCKET}/objects/a.txt", headers=viewer).json()["detail"]
    assert "belongs to project 'team-b'" in refused and "kawa projects add-member team-b viewer-user" in refused
    # A global data engineer who is no member of team-a may do none of it in team-a (but may in default).
    assert client.put(f"/api/buckets/{A_BUCKET}/objects/c.txt", content=b"y", headers=engineer).status_code == 403
    assert client.get(f"/api/buckets/{A_BUCKET}/objects/a.txt", headers=engineer).status_code == 403
    assert client.put("/api/buckets/shared-scans/objects/c.txt", content=b"y", headers=engineer).status_code == 201
    assert client.get(f"/api/buckets/{B_BUCKET}/objects/a.txt", headers=world["admin"]).status_code == 200


def test_jobs_are_seen_submitted_and_cancelled_with_the_role_in_their_project(
    client: Any, portal: Any, world: dict[str, dict[str, str]]
) -> None:
    viewer, scientist = world["viewer"], world["data-scientist"]
    # The global viewer is a data engineer in team-a: data engineers may not submit jobs, there or anywhere.
    job = {"entrypoint": "python -c pass", "project": "team-a"}
    assert client.post("/api/jobs", json=job, headers=viewer).status_code == 403
    ProjectRegistry.in_home(portal.config.home).add_member("team-a", "viewer-user", Role.DATA_SCIENTIST)
    mine = client.post("/api/jobs", json=job, headers=viewer)
    assert mine.status_code == 201, mine.text
    assert client.post("/api/jobs", json={**job, "project": "team-b"}, headers=viewer).status_code == 403
    theirs = client.post("/api/jobs", json={**job, "project": "team-b"}, headers=world["admin"]).json()["id"]
    # The global data scientist is no member of team-a: cannot see, read the log of, or cancel its job.
    job_id = mine.json()["id"]
    assert job_id not in {j["id"] for j in client.get("/api/jobs", headers=scientist).json()["items"]}
    for response in (client.get(f"/api/jobs/{job_id}", headers=scientist),
                     client.get(f"/api/jobs/{job_id}/logs", headers=scientist),
                     client.post(f"/api/jobs/{job_id}/cancel", headers=scientist)):  # fmt: skip
        assert response.status_code == 403, response.text
    listed = {j["id"] for j in client.get("/api/jobs", headers=viewer).json()["items"]}
    assert job_id in listed and theirs not in listed
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=viewer).json()["state"] == "cancelled"
    # A job of default (or of an unregistered label) is checked with the global role, as before.
    assert client.post("/api/jobs", json={"entrypoint": "python -c pass"}, headers=scientist).status_code == 201
    assert client.post("/api/jobs", json={"entrypoint": "python -c pass"}, headers=viewer).status_code == 403


# Who may do what in a project, written out here independently of kawa.portal.permissions (as in
# test_permissions.py): action → the per-project roles that may take it.
VI, DE, DS, ML, AD = "viewer", "data-engineer", "data-scientist", "ml-engineer", "admin"
MAY = {
    "view": {VI, DE, DS, ML, AD},
    "phi.read": {DE, AD},
    "buckets.write": {DE, AD},
    "topics.write": {DE, AD},
    "jobs.submit": {DS, ML, AD},
    "jobs.cancel": {DS, ML, AD},
}


def test_user_by_project_by_role_by_endpoint_has_no_unauthorized_success(
    client: Any, portal: Any, world: dict[str, dict[str, str]]
) -> None:
    """Each per-project role, held in team-a by a user who is a viewer globally, against every project-scoped
    endpoint, in team-a (the expected table decides) and in team-b (where the user is no member: always 403)."""
    registry = ProjectRegistry.in_home(portal.config.home)
    admin = world["admin"]
    n = iter(range(10_000))
    outcomes: list[tuple[str, str, str, int, bool]] = []

    def cases(project: str) -> list[tuple[str, str, Any]]:
        bucket, topic = f"{project}--scans", f"{project}.events"

        def a_job() -> str:
            created = client.post("/api/jobs", json={"entrypoint": "python -c pass", "project": project}, headers=admin)
            return str(created.json()["id"])

        def an_object() -> str:
            key = f"o-{next(n)}.txt"
            assert client.put(f"/api/buckets/{bucket}/objects/{key}", content=b"z", headers=admin).status_code == 201
            return key

        return [
            ("phi.read", "read a PHI object", lambda h: client.get(f"/api/buckets/{bucket}/objects/a.txt", headers=h)),
            ("phi.read", "list a PHI bucket", lambda h: client.get(f"/api/buckets/{bucket}/objects", headers=h)),
            ("buckets.write", "put", lambda h: client.put(f"/api/buckets/{bucket}/objects/p-{next(n)}", content=b"y",
                                                          headers=h)),
            ("buckets.write", "delete", lambda h: client.delete(f"/api/buckets/{bucket}/objects/{an_object()}",
                                                                headers=h)),
            ("view", "describe a topic", lambda h: client.get(f"/api/topics/{topic}", headers=h)),
            ("phi.read", "read records", lambda h: client.get(f"/api/topics/{topic}/records", headers=h)),
            ("topics.write", "create a topic", lambda h: client.post(
                "/api/topics", json={"name": f"{project}.t{next(n)}", "partitions": 1}, headers=h)),
            ("jobs.submit", "submit a job", lambda h: client.post(
                "/api/jobs", json={"entrypoint": "python -c pass", "project": project}, headers=h)),
            ("jobs.cancel", "cancel a job", lambda h: client.post(f"/api/jobs/{a_job()}/cancel", headers=h)),
            ("view", "read a job", lambda h: client.get(f"/api/jobs/{a_job()}", headers=h)),
        ]  # fmt: skip

    for role in (VI, DE, DS, ML, AD):
        user = f"member-{role}"
        portal.users.add_user(user, Role.VIEWER, "correct horse battery")
        headers = bearer(portal.users.create_token(user, "matrix")[1])
        registry.add_member("team-a", user, role)
        for project in ("team-a", "team-b"):
            for action, what, call in cases(project):
                status = call(headers).status_code
                allowed = project == "team-a" and role in MAY[action]
                outcomes.append((role, project, what, status, allowed))
    wrong = [o for o in outcomes if (o[3] < 400) != o[4] or (not o[4] and o[3] != 403)]
    assert wrong == [], wrong
    assert len(outcomes) == 5 * 2 * 10 and sum(o[4] for o in outcomes) >= 15


def test_models_of_a_project_are_listed_and_promoted_with_the_role_there(
    client: Any, portal: Any, platform: Any, tmp_path: Any, world: dict[str, dict[str, str]]
) -> None:
    """A registered model ``P.name`` belongs to project P, as a topic does."""
    from kawa.ml.registry import Registry

    registry = Registry(platform.config, platform.log)
    try:
        artifact = tmp_path / "model"
        artifact.mkdir()
        (artifact / "MLmodel").write_text("flavors: {}\n")
        for name in ("team-a.clf", "team-b.clf", "plain-clf"):
            registry.register(str(artifact), name)
    finally:
        registry.close()
    ProjectRegistry.in_home(portal.config.home).add_member("team-a", "viewer-user", Role.ML_ENGINEER)
    viewer, ml = world["viewer"], world["ml-engineer"]
    listed = {m["name"] for m in client.get("/api/models", headers=viewer).json()["items"]}
    assert {"team-a.clf", "plain-clf"} <= listed and "team-b.clf" not in listed
    assert "team-a.clf" not in {m["name"] for m in client.get("/api/models", headers=ml).json()["items"]}
    assert client.post("/api/models/team-a.clf/promote", json={"version": 1}, headers=viewer).status_code == 200
    for response in (client.post("/api/models/team-b.clf/promote", json={"version": 1}, headers=viewer),
                     client.get("/api/models/team-b.clf/versions", headers=viewer),
                     client.post("/api/models/team-a.clf/promote", json={"version": 1}, headers=ml),
                     client.post("/api/models/plain-clf/promote", json={"version": 1}, headers=viewer)):  # fmt: skip
        assert response.status_code == 403, response.text
    assert client.post("/api/models/plain-clf/promote", json={"version": 1}, headers=ml).status_code == 200


def test_experiments_follow_their_models_project(client: Any, world: dict[str, dict[str, str]]) -> None:
    from dataclasses import replace

    from tests.portal.test_experiments_page import SPEC

    admin, viewer, scientist = world["admin"], world["viewer"], world["data-scientist"]
    for project in ("team-a", "team-b"):
        spec = replace(SPEC, name=f"{project}-canary", model=f"{project}.clf",
                       arms=(replace(SPEC.arms[0], model=f"{project}.clf@champion"), SPEC.arms[1]))  # fmt: skip
        assert client.post("/api/experiments", json={"spec": spec.to_dict()}, headers=admin).status_code == 201
    # The viewer is a data engineer in team-a: sees its experiment, not team-b's; may not manage either.
    assert [e["name"] for e in client.get("/api/experiments", headers=viewer).json()] == ["team-a-canary"]
    assert client.get("/api/experiments/team-a-canary", headers=viewer).status_code == 200
    assert client.get("/api/experiments/team-b-canary/looks", headers=viewer).status_code == 403
    assert client.post("/api/experiments/team-a-canary/stop", json={}, headers=viewer).status_code == 403
    # A global data scientist is no member of either: sees neither, stops neither.
    assert client.get("/api/experiments", headers=scientist).json() == []
    assert client.post("/api/experiments/team-a-canary/stop", json={}, headers=scientist).status_code == 403
    mine = replace(SPEC, name="mine", model="team-a.other", arms=(replace(SPEC.arms[0], model="team-a.other@champion"),
                                                                  SPEC.arms[1]))  # fmt: skip
    assert client.post("/api/experiments", json={"spec": mine.to_dict()}, headers=scientist).status_code == 403
    assert client.post("/api/experiments/team-b-canary/stop", json={}, headers=admin).json()["status"] == "stopped"


def test_dead_letters_of_a_project_are_read_and_redriven_with_the_role_there(
    client: Any, portal: Any, world: dict[str, dict[str, str]]
) -> None:
    """A dead-letter topic ``P.x.dlq`` belongs to project P: listed, read (payloads with phi.read there) and
    re-driven with the role in P; ``default``'s with the global role, as before projects."""
    from kawa.events import new_event, to_kafka

    log = portal.platform.log
    producer = log.producer()
    for topic in ("team-a.events.dlq", "team-b.events.dlq", "plain.dlq"):
        log.create_topic(TopicSpec(topic), exist_ok=True)
        key, value, headers = to_kafka(new_event("test.scan", "/iso", {"patient": "p-1"}, subject="scan-1"))
        producer.send(topic, value, key=key, headers=[*headers, ("kawa-error-type", b"ValueError")])
    log.create_topic(TopicSpec("plain"), exist_ok=True)
    producer.close()
    viewer, engineer, admin = world["viewer"], world["data-engineer"], world["admin"]  # viewer: DE in team-a

    def listed(headers: dict[str, str]) -> Any:
        return client.get("/api/deadletters", headers=headers)

    assert {t["topic"] for t in listed(viewer).json()["items"]} == {"team-a.events.dlq"}
    assert {t["topic"] for t in listed(engineer).json()["items"]} == {"plain.dlq"}  # no member of either team
    every = {t["topic"] for t in listed(admin).json()["items"]}
    assert {"team-a.events.dlq", "team-b.events.dlq", "plain.dlq"} <= every
    (letter,) = client.get("/api/deadletters/team-a.events.dlq/records", headers=viewer).json()
    assert letter["data"] == {"patient": "p-1"}  # a data engineer of team-a reads its payloads (phi.read there)
    for call in (lambda: client.get("/api/deadletters/team-b.events.dlq/records", headers=viewer),
                 lambda: client.get("/api/deadletters/plain.dlq/records", headers=viewer),  # a viewer in default
                 lambda: client.get("/api/deadletters/team-a.events.dlq/records", headers=engineer),
                 lambda: client.post("/api/deadletters/team-b.events.dlq/redrive", json={"partition": 0, "offset": 0},
                                     headers=viewer),
                 lambda: client.post("/api/deadletters/team-a.events.dlq/redrive",  # into another project's topic
                                     json={"partition": 0, "offset": 0, "target": "team-b.events"}, headers=viewer),
                 lambda: client.get("/deadletters?topic=team-b.events.dlq", headers=viewer)):  # fmt: skip
        response = call()
        assert response.status_code == 403, response.text
    moved = client.post("/api/deadletters/team-a.events.dlq/redrive", json={"partition": 0, "offset": 0},
                        headers=viewer)  # fmt: skip
    assert moved.status_code == 200 and moved.json()["topic"] == "team-a.events", moved.text
    page = client.get("/deadletters?topic=team-a.events.dlq", headers=viewer)
    assert page.status_code == 200 and "team-b.events.dlq" not in page.text
    assert 'href="/deadletters"' in client.get("/topics", headers=viewer).text  # the link, for a project's reader
    assert listed(world["viewer"]).status_code == 200
    ProjectRegistry.in_home(portal.config.home).remove_member("team-a", "viewer-user")
    assert listed(viewer).status_code == 403  # reads dead letters nowhere now: said, as before projects
    assert 'href="/deadletters"' not in client.get("/topics", headers=viewer).text


def test_functions_belong_to_the_project_of_their_trigger(
    client: Any, platform: Any, world: dict[str, dict[str, str]]
) -> None:
    """A function triggered by ``P.x`` (or by bucket ``P--x``) is P's: listed, read and charted only for those who
    may view P; ``default``'s functions with the global role."""
    from kawa.functions.app import App
    from kawa.functions.host import FunctionHost

    app = App("iso")
    for topic, name in (("team-a.orders", "a"), ("team-b.orders", "b"), ("orders", "plain")):
        platform.log.create_topic(TopicSpec(topic), exist_ok=True)
        app.function(topic=topic, name=name)(lambda event, ctx: None)
    host = FunctionHost(app, log=platform.log, config=platform.config)
    host.start()
    platform.functions_host = host
    try:
        viewer, engineer, admin = world["viewer"], world["data-engineer"], world["admin"]

        def names(headers: dict[str, str]) -> set[str]:
            return {f["name"] for f in client.get("/api/functions", headers=headers).json()["items"]}

        assert names(viewer) == {"iso.a", "iso.plain"}  # a data engineer in team-a, a viewer globally
        assert names(engineer) == {"iso.plain"}
        assert names(admin) == {"iso.a", "iso.b", "iso.plain"}
        assert client.get("/api/functions/iso.a", headers=viewer).json()["topic"] == "team-a.orders"
        for path in ("/api/functions/iso.b", "/api/functions/iso.b/history", "/api/functions/iso.a/history"):
            who = engineer if path.endswith("a/history") else viewer
            refused = client.get(path, headers=who)
            assert refused.status_code == 403 and "belongs to project" in refused.json()["detail"], refused.text
        page = client.get("/functions", headers=viewer)
        assert page.status_code == 200 and "iso.a" in page.text and "iso.b" not in page.text
    finally:
        platform.functions_host = None
        host.stop()


def test_routes_need_the_role_in_every_project_their_endpoints_belong_to(
    client: Any, portal: Any, world: dict[str, dict[str, str]]
) -> None:
    """A route reads its source and writes its sinks and dead letters: applying or deleting it needs
    ``routes.manage`` in each of their projects, and seeing it ``portal.view`` in each."""
    member, admin = world["viewer"], world["admin"]  # member: a data engineer (who manages routes) in team-a

    def route(rid: str, source: str, sink: str) -> dict[str, str]:
        return {"yaml": f"routes:\n  - id: {rid}\n    from: topic:{source}?group={rid}\n    to: topic:{sink}\n"}

    inside = client.post("/api/routes", json=route("a-copy", "team-a.events", "team-a.copy"), headers=member)
    assert inside.status_code == 200 and inside.json() == [{"id": "a-copy", "outcome": "created"}], inside.text
    for body in (route("a-to-b", "team-a.events", "team-b.copy"),  # writing into another project
                 route("b-to-a", "team-b.events", "team-a.copy"),  # reading another project's topic
                 route("plain", "plain", "plain-copy")):  # default's: the global role (a viewer) decides
        refused = client.post("/api/routes", json=body, headers=member)
        assert refused.status_code == 403, refused.text
    theirs = client.post("/api/routes", json=route("b-copy", "team-b.events", "team-b.copy"), headers=admin)
    assert theirs.status_code == 200, theirs.text
    listed = {r["id"] for r in client.get("/api/routes", headers=member).json()["items"]}
    assert listed == {"a-copy"}
    assert client.get("/api/routes/b-copy", headers=member).status_code == 403
    page = client.get("/functions", headers=member)
    assert page.status_code == 200 and "a-copy" in page.text and "b-copy" not in page.text
    assert client.delete("/api/routes/b-copy", headers=member).status_code == 403
    assert client.delete("/api/routes/a-copy", headers=member).status_code == 204
    assert {r["id"] for r in client.get("/api/routes", headers=admin).json()["items"]} == {"b-copy"}


def test_monitoring_and_the_loop_of_a_projects_model_need_the_role_there(
    client: Any, portal: Any, world: dict[str, dict[str, str]]
) -> None:
    """A model ``P.x`` is P's: its monitoring (API and page) and its loop timeline are for those who may view P."""
    from kawa.events import to_kafka
    from kawa.monitor.status import ALERTS_TOPIC, WINDOW_EVENT, monitor_event

    log = portal.platform.log
    log.create_topic(TopicSpec(ALERTS_TOPIC), exist_ok=True)
    producer = log.producer()
    for i, model in enumerate(("team-a.risk", "team-b.risk", "risk")):
        event = monitor_event(WINDOW_EVENT, f"w{i}", model, 1, {"window": [0, 60], "n": 10, "drift": {}}, 1000.0)
        key, value, headers = to_kafka(event.to_cloudevent())
        producer.send(ALERTS_TOPIC, value, key=key, headers=headers)
    producer.close()
    viewer, admin = world["viewer"], world["admin"]
    from tests.waiting import wait_for

    wait_for(lambda: len(client.get("/api/monitoring", headers=admin).json()) == 3, 30, "the monitored models")
    assert client.get("/api/monitoring", headers=viewer).json() == ["risk", "team-a.risk"]
    assert client.get("/api/monitoring/team-a.risk", headers=viewer).status_code == 200
    for path in ("/api/monitoring/team-b.risk", "/monitoring?model=team-b.risk", "/api/loop/team-b.risk",
                 "/loop?model=team-b.risk"):  # fmt: skip
        refused = client.get(path, headers=viewer)
        assert refused.status_code == 403 and "team-b" in refused.text, (path, refused.text)
    page = client.get("/monitoring", headers=viewer)
    assert page.status_code == 200 and "team-b.risk" not in page.text
    assert client.get("/api/loop/team-b.risk", headers=admin).status_code == 200


def test_the_overview_graph_leaves_out_other_projects_and_what_touches_them(
    client: Any, world: dict[str, dict[str, str]], portal: Any
) -> None:
    from kawa.store.rules import NotificationRule
    from tests.waiting import wait_for

    store = portal.platform.store
    store.add_notification(NotificationRule(id="b-in", bucket=B_BUCKET, topic=B_TOPIC))
    store.add_notification(NotificationRule(id="a-in", bucket=A_BUCKET, topic=A_TOPIC))

    def labels(headers: dict[str, str]) -> set[str]:
        response = client.get("/api/overview", headers=headers)
        assert response.status_code == 200, response.text
        return {n["id"] for n in response.json()["nodes"]}

    everything = {f"bucket:{A_BUCKET}", f"bucket:{B_BUCKET}", f"topic:{A_TOPIC}", f"topic:{B_TOPIC}", "topic:plain"}
    wait_for(lambda: everything <= labels(world["admin"]), what="the admin's overview shows both teams")
    mine = labels(world["viewer"])
    assert {f"bucket:{A_BUCKET}", f"topic:{A_TOPIC}", "bucket:shared-scans", "topic:plain"} <= mine
    assert not {f"bucket:{B_BUCKET}", f"topic:{B_TOPIC}"} & mine
    graph = client.get("/api/overview", headers=world["viewer"]).json()
    assert all(e["from"] in mine and e["to"] in mine for e in graph["edges"])
    assert {"from": f"bucket:{A_BUCKET}", "to": f"topic:{A_TOPIC}"}.items() <= next(
        e for e in graph["edges"] if e["from"] == f"bucket:{A_BUCKET}").items()
