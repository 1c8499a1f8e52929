"""Every role x every mutating endpoint and PHI-bearing read: allowed where the roles table says so, 403
everywhere else.

The expected table below is written out independently of ``kawa.portal.permissions.PERMISSIONS``: if the
map in the code is wrong, ``test_permission_map_matches_the_documented_table`` fails, and the requests
below (which assert against this table, not against the map) fail too.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kawa.portal.permissions import PERMISSIONS, Action, Role
from tests.portal.conftest import PASSWORD, bearer, make_config

V, DE, DS, ML, AD = "viewer", "data-engineer", "data-scientist", "ml-engineer", "admin"

# action -> roles that may take it (the table in docs/portal.md)
EXPECTED: dict[str, set[str]] = {
    "portal.view": {V, DE, DS, ML, AD},
    "tokens.own": {V, DE, DS, ML, AD},
    "phi.read": {DE, AD},
    "deadletters.read": {DE, DS, ML, AD},
    "deadletters.redrive": {DE, ML, AD},
    "topics.write": {DE, AD},
    "buckets.write": {DE, AD},
    "routes.manage": {DE, AD},
    "jobs.submit": {DS, ML, AD},
    "jobs.cancel": {DS, ML, AD},
    "models.promote": {ML, AD},
    "experiments.manage": {DS, ML, AD},
    "users.manage": {AD},
    "audit.read": {AD},
}

ROLES = [V, DE, DS, ML, AD]
PHI_BUCKET, FREE_BUCKET, DLQ, SOURCE = "scans-in", "scans-clean", "scans.dlq", "scans"
MODEL = "matrix-model"


def test_permission_map_matches_the_documented_table() -> None:
    assert {a.value for a in Action} == set(EXPECTED), "an action is missing from the table or the code"
    for action, roles in EXPECTED.items():
        for role in ROLES:
            assert (Action(action) in PERMISSIONS[Role(role)]) == (role in roles), f"{role} x {action}"


@dataclass
class World:
    client: Any
    tokens: dict[str, str]
    portal: Any
    counter: Iterator[int]

    def headers(self, role: str) -> dict[str, str]:
        return bearer(self.tokens[role])

    def admin(self) -> dict[str, str]:
        return self.headers(AD)

    def n(self) -> int:
        return next(self.counter)


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (64, 64), 128).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from argon2 import PasswordHasher
    from fastapi.testclient import TestClient

    from kawa.events import new_event, to_kafka
    from kawa.log.base import TopicSpec
    from kawa.ml.registry import Registry
    from kawa.platform import Platform
    from kawa.portal.app import create_app
    from kawa.portal.runtime import Portal
    from kawa.portal.users import UserStore

    home = tmp_path_factory.mktemp("matrix") / ".kawa"
    config = make_config(home, phi_free_buckets=[FREE_BUCKET])
    platform = Platform(config)
    portal = Portal(platform)
    portal.users = UserStore(portal.users.path, PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    tokens = {}
    for role in ROLES:
        portal.users.add_user(f"{role}-user", role, PASSWORD)
        tokens[role] = portal.users.create_token(f"{role}-user")[1]
    store = platform.store
    for bucket in (PHI_BUCKET, FREE_BUCKET):
        store.create_bucket(bucket)
        store.put(bucket, "img.png", _png(), content_type="image/png")
    log = platform.log
    log.create_topic(TopicSpec(SOURCE))
    log.create_topic(TopicSpec(DLQ))
    producer = log.producer()
    for i in range(20):
        key, value, headers = to_kafka(new_event("test.scan", "/matrix", {"i": i}))
        producer.send(DLQ, value, key=key, headers=[*headers, ("kawa-error-type", b"ValueError")])
        producer.send(SOURCE, value, key=key, headers=headers)
    producer.close()
    artifact = home.parent / "model"
    artifact.mkdir()
    (artifact / "MLmodel").write_text("flavors: {}\n")
    registry = Registry(config, log)
    for _ in range(2):
        registry.register(str(artifact), MODEL)
    registry.promote(MODEL, 1)
    registry.close()
    with TestClient(create_app(portal), base_url="http://127.0.0.1") as client:
        yield World(client, tokens, portal, itertools.count())
    portal.stop()
    platform.stop()


# --- the cases: (action, request) -------------------------------------------------------------------

Request = Callable[[World, str], Any]


def _create_topic(w: World, role: str) -> Any:
    return w.client.post("/api/topics", json={"name": f"t-{role}-{w.n()}"}, headers=w.headers(role))


def _create_bucket(w: World, role: str) -> Any:
    return w.client.post("/api/buckets", json={"name": f"b-{role}-{w.n()}"}, headers=w.headers(role))


def _put_object(w: World, role: str) -> Any:
    return w.client.put(f"/api/buckets/{FREE_BUCKET}/objects/up-{role}-{w.n()}.bin", content=b"x",
                        headers=w.headers(role))


def _delete_object(w: World, role: str) -> Any:
    key = f"del-{role}-{w.n()}.bin"
    w.portal.store.store.put(FREE_BUCKET, key, b"x")
    return w.client.delete(f"/api/buckets/{FREE_BUCKET}/objects/{key}", headers=w.headers(role))


def _list_phi(w: World, role: str) -> Any:
    return w.client.get(f"/api/buckets/{PHI_BUCKET}/objects", headers=w.headers(role))


def _get_phi(w: World, role: str) -> Any:
    return w.client.get(f"/api/buckets/{PHI_BUCKET}/objects/img.png", headers=w.headers(role))


def _thumb_phi(w: World, role: str) -> Any:
    return w.client.get(f"/api/thumbnails/{PHI_BUCKET}/img.png", headers=w.headers(role))


def _topic_records(w: World, role: str) -> Any:
    return w.client.get(f"/api/topics/{SOURCE}/records?limit=2", headers=w.headers(role))


def _dead_letter_topics(w: World, role: str) -> Any:
    return w.client.get("/api/deadletters", headers=w.headers(role))


def _dead_letter_records(w: World, role: str) -> Any:
    return w.client.get(f"/api/deadletters/{DLQ}/records?limit=3", headers=w.headers(role))


def _dead_letters_page(w: World, role: str) -> Any:
    return w.client.get(f"/deadletters?topic={DLQ}", headers=w.headers(role))


def _redrive(w: World, role: str) -> Any:
    return w.client.post(f"/api/deadletters/{DLQ}/redrive", json={"partition": 0, "offset": w.n() % 20},
                         headers=w.headers(role))


def _redrive_form(w: World, role: str) -> Any:
    return w.client.post(f"/deadletters/{DLQ}/redrive", data={"partition": 0, "offset": 0},
                         headers=w.headers(role), follow_redirects=False)


def _apply_route(w: World, role: str) -> Any:
    yaml = f"routes:\n  - id: r-{role}-{w.n()}\n    from: topic:{SOURCE}\n    to: topic:{SOURCE}-copy\n"
    return w.client.post("/api/routes", json={"yaml": yaml}, headers=w.headers(role))


def _delete_route(w: World, role: str) -> Any:
    route_id = f"del-{role}-{w.n()}"
    yaml = f"routes:\n  - id: {route_id}\n    from: topic:{SOURCE}\n    to: topic:{SOURCE}-copy\n"
    assert w.client.post("/api/routes", json={"yaml": yaml}, headers=w.admin()).status_code == 200
    return w.client.delete(f"/api/routes/{route_id}", headers=w.headers(role))


def _submit_job(w: World, role: str) -> Any:
    return w.client.post("/api/jobs", json={"entrypoint": "true", "project": role}, headers=w.headers(role))


def _submit_job_form(w: World, role: str) -> Any:
    return w.client.post("/jobs", data={"entrypoint": "true"}, headers=w.headers(role), follow_redirects=False)


def _queued_job(w: World) -> str:
    response = w.client.post("/api/jobs", json={"entrypoint": "sleep 30"}, headers=w.admin())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _cancel_job(w: World, role: str) -> Any:
    return w.client.post(f"/api/jobs/{_queued_job(w)}/cancel", headers=w.headers(role))


def _cancel_job_form(w: World, role: str) -> Any:
    return w.client.post(f"/jobs/{_queued_job(w)}/cancel", headers=w.headers(role), follow_redirects=False)


def _promote(w: World, role: str) -> Any:
    return w.client.post(f"/api/models/{MODEL}/promote", json={"version": 1 + w.n() % 2}, headers=w.headers(role))


def _promote_form(w: World, role: str) -> Any:
    return w.client.post(f"/models/{MODEL}/promote", data={"version": 2}, headers=w.headers(role),
                         follow_redirects=False)


def _rollback(w: World, role: str) -> Any:
    for version in (1, 2):  # leave history to roll back over
        assert w.client.post(f"/api/models/{MODEL}/promote", json={"version": version},
                             headers=w.admin()).status_code == 200
    return w.client.post(f"/api/models/{MODEL}/rollback", json={}, headers=w.headers(role))


def _experiment(w: World, name: str) -> dict[str, Any]:
    return {"name": name, "model": MODEL, "unit": "patient", "salt": name, "primary_metric": "m",
            "maturity_window_s": 60, "horizon": 100,
            "arms": [{"name": "a", "weight": 0.5, "model": f"{MODEL}@champion"},
                     {"name": "b", "weight": 0.5, "holdout": True}]}  # fmt: skip


def _running_experiment(w: World) -> str:
    name = f"run-{w.n()}"
    response = w.client.post("/api/experiments", json={"spec": _experiment(w, name)}, headers=w.admin())
    assert response.status_code == 201, response.text
    return name


def _create_experiment(w: World, role: str) -> Any:
    return w.client.post("/api/experiments", json={"spec": _experiment(w, f"e-{role}-{w.n()}")},
                         headers=w.headers(role))


def _stop_experiment(w: World, role: str) -> Any:
    return w.client.post(f"/api/experiments/{_running_experiment(w)}/stop", json={}, headers=w.headers(role))


def _stop_experiment_form(w: World, role: str) -> Any:
    return w.client.post(f"/experiments/{_running_experiment(w)}/stop", data={"reason": "matrix"},
                         headers=w.headers(role), follow_redirects=False)


def _list_users(w: World, role: str) -> Any:
    return w.client.get("/api/users", headers=w.headers(role))


def _add_user(w: World, role: str) -> Any:
    return w.client.post("/api/users", json={"name": f"new-{role}-{w.n()}", "role": "viewer"},
                         headers=w.headers(role))


def _patch_user(w: World, role: str) -> Any:
    return w.client.patch("/api/users/viewer-user", json={"role": "viewer"}, headers=w.headers(role))


def _read_audit(w: World, role: str) -> Any:
    return w.client.get("/api/audit?limit=5", headers=w.headers(role))


def _create_token(w: World, role: str) -> Any:
    return w.client.post("/api/me/tokens", json={"label": "matrix"}, headers=w.headers(role))


def _token_form(w: World, role: str) -> Any:
    return w.client.post("/account/tokens", data={"label": "matrix"}, headers=w.headers(role))


CASES: list[tuple[str, Request, set[int]]] = [
    ("topics.write", _create_topic, {201}),
    ("buckets.write", _create_bucket, {201}),
    ("buckets.write", _put_object, {201}),
    ("buckets.write", _delete_object, {204}),
    ("phi.read", _list_phi, {200}),
    ("phi.read", _get_phi, {200}),
    ("phi.read", _thumb_phi, {200}),
    ("phi.read", _topic_records, {200}),
    ("deadletters.read", _dead_letter_topics, {200}),
    ("deadletters.read", _dead_letter_records, {200}),
    ("deadletters.read", _dead_letters_page, {200}),
    ("deadletters.redrive", _redrive, {200}),
    ("deadletters.redrive", _redrive_form, {303}),
    ("routes.manage", _apply_route, {200}),
    ("routes.manage", _delete_route, {204}),
    ("jobs.submit", _submit_job, {201}),
    ("jobs.submit", _submit_job_form, {303}),
    ("jobs.cancel", _cancel_job, {200}),
    ("jobs.cancel", _cancel_job_form, {303}),
    ("models.promote", _promote, {200}),
    ("models.promote", _promote_form, {303}),
    ("models.promote", _rollback, {200}),
    ("experiments.manage", _create_experiment, {201}),
    ("experiments.manage", _stop_experiment, {200}),
    ("experiments.manage", _stop_experiment_form, {303}),
    ("users.manage", _list_users, {200}),
    ("users.manage", _add_user, {201}),
    ("users.manage", _patch_user, {200}),
    ("audit.read", _read_audit, {200}),
    ("tokens.own", _create_token, {201}),
    ("tokens.own", _token_form, {200}),
]


def test_every_action_has_a_case() -> None:
    covered = {action for action, _request, _ok in CASES} | {"portal.view"}
    assert covered == set(EXPECTED)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("action", "request_", "ok"), CASES, ids=[f"{a}:{r.__name__[1:]}" for a, r, _ in CASES])
def test_role_may_or_may_not(world: World, action: str, request_: Request, ok: set[int], role: str) -> None:
    response = request_(world, role)
    if role in EXPECTED[action]:
        assert response.status_code in ok, f"{role} may {action}: {response.status_code} {response.text}"
    else:
        assert response.status_code == 403, f"{role} must be denied {action}: {response.status_code}"
        assert role in response.text and action in response.text


@pytest.mark.parametrize("role", ROLES)
def test_phi_free_buckets_are_readable_by_every_role(world: World, role: str) -> None:
    assert world.client.get(f"/api/buckets/{FREE_BUCKET}/objects", headers=world.headers(role)).status_code == 200
    response = world.client.get(f"/api/thumbnails/{FREE_BUCKET}/img.png", headers=world.headers(role))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


@pytest.mark.parametrize("role", ROLES)
def test_dead_letter_payloads_only_with_phi_read(world: World, role: str) -> None:
    response = world.client.get(f"/api/deadletters/{DLQ}/records?limit=2", headers=world.headers(role))
    if role not in EXPECTED["deadletters.read"]:
        assert response.status_code == 403
        return
    rows = response.json()
    assert rows and all(r["error_type"] == "ValueError" for r in rows)
    if role in EXPECTED["phi.read"]:
        assert all(r["data"] is not None for r in rows)
    else:
        assert all(r["data"] is None and r["event_subject"] is None for r in rows)
