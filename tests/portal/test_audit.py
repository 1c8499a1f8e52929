"""The audit trail through the portal: every mutating endpoint of the OpenAPI document leaves exactly one record,
PHI reads (allowed or refused) are recorded, reads of PHI-free data are not, and no content reaches a record."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from kawa.audit.trail import AuditFilter, count_by_request, read_audit
from kawa.portal.permissions import Role
from tests.portal.conftest import bearer

MUTATING = ("post", "put", "patch", "delete")


def _records(portal: Any) -> list[Any]:
    return read_audit(portal.platform.log)


def _fill(path: str) -> str:
    """A concrete path for an OpenAPI path template: every parameter gets a name-shaped value."""
    return re.sub(r"\{[^}]+\}", "audit-x1", path)


@pytest.mark.timeout(900)  # the model endpoints create MLflow's sqlite schema first: minutes on a loaded machine
def test_every_mutating_endpoint_in_the_openapi_document_leaves_exactly_one_record(
    client: Any, portal: Any, admin: dict[str, str]
) -> None:
    document = client.get("/openapi.json").json()
    sent: dict[str, tuple[str, str, int]] = {}  # request id -> (method, path, status)
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            if method not in MUTATING:
                continue
            path = _fill(template)
            body = {"json": {}} if "requestBody" in operation else {}
            response = client.request(method.upper(), path, headers=admin, **body)
            request_id = response.headers["X-Request-ID"]
            assert request_id not in sent
            sent[request_id] = (method, path, response.status_code)
    documented = len(sent)
    assert documented >= 10, "the walk found fewer mutating endpoints than the portal has"
    from fastapi.routing import APIRoute

    from kawa.portal.web import experiments_page, loop_page, monitoring_page, pages

    for router in (pages.router, experiments_page.router, loop_page.router, monitoring_page.router):
        for route in router.routes:  # the pages' forms, outside the document
            if isinstance(route, APIRoute) and not route.include_in_schema:
                for method in sorted(route.methods & {m.upper() for m in MUTATING}):
                    path = _fill(route.path)
                    response = client.request(method, path, headers=admin, data={}, follow_redirects=False)
                    sent[response.headers["X-Request-ID"]] = (method, path, response.status_code)
    walked = {path for _method, path, _status in sent.values()}
    assert len(sent) > documented and {"/api/buckets", "/jobs", "/api/login", "/login"} <= walked
    records = _records(portal)
    counts = count_by_request(records)
    assert {rid: counts.get(rid, 0) for rid in sent} == dict.fromkeys(sent, 1)
    by_id = {r.request_id: r for r in records}
    for rid, (_method, path, status) in sent.items():
        record = by_id[rid]
        assert (record.resource, record.status) == (path, status)
        assert record.user in {"admin-user", "anonymous"}  # anonymous: the login endpoint takes no credentials
        assert record.result == ("ok" if status < 400 else "denied" if status in {401, 403, 429} else "error")


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (32, 32), 90).save(out, format="PNG")
    return out.getvalue()


def test_phi_reads_are_recorded_allowed_or_refused_and_other_reads_are_not(
    client: Any, portal: Any, tokens: dict[Role, str]
) -> None:
    store = portal.platform.store
    store.create_bucket("scans-in")
    store.put("scans-in", "patient-scan.png", _png(), content_type="image/png")
    engineer, scientist = bearer(tokens[Role.DATA_ENGINEER]), bearer(tokens[Role.DATA_SCIENTIST])
    allowed = client.get("/api/buckets/scans-in/objects/patient-scan.png", headers=engineer)
    refused = client.get("/api/buckets/scans-in/objects/patient-scan.png", headers=scientist)
    plain = client.get("/api/topics", headers=scientist)
    assert (allowed.status_code, refused.status_code, plain.status_code) == (200, 403, 200)
    records = {r.request_id: r for r in _records(portal)}
    ok = records[allowed.headers["X-Request-ID"]]
    denied = records[refused.headers["X-Request-ID"]]
    assert (ok.user, ok.action, ok.result) == ("data-engineer-user", "phi.read", "ok")
    assert (denied.user, denied.action, denied.result, denied.status) == ("data-scientist-user", "phi.read",
                                                                          "denied", 403)  # fmt: skip
    assert ok.resource == "/api/buckets/scans-in/objects/patient-scan.png"
    assert plain.headers["X-Request-ID"] not in records


def test_records_hold_no_content_and_admins_filter_them(client: Any, portal: Any, tokens: dict[Role, str]) -> None:
    admin, engineer = bearer(tokens[Role.ADMIN]), bearer(tokens[Role.DATA_ENGINEER])
    assert client.post("/api/buckets", json={"name": "notes"}, headers=engineer).status_code == 201
    put = client.put("/api/buckets/notes/objects/n.txt", content=b"name: Jane Roe, MRN 4417", headers=engineer)
    assert put.status_code == 201
    denied = client.post("/api/users", json={"name": "mallory", "role": "admin"}, headers=engineer)
    assert denied.status_code == 403
    everything = _records(portal)
    assert not any("Jane" in str(r.data()) or "4417" in str(r.data()) for r in everything)
    mine = client.get("/api/audit?user=data-engineer-user", headers=admin).json()
    assert [(r["action"], r["result"]) for r in mine] == [("buckets.write", "ok"), ("buckets.write", "ok"),
                                                           ("users.manage", "denied")]  # fmt: skip
    assert [r["request_id"] for r in mine][-1] == denied.headers["X-Request-ID"]
    refused = client.get("/api/audit", headers=engineer)
    assert refused.status_code == 403
    only_denied = read_audit(portal.platform.log, AuditFilter(result="denied", user="data-engineer-user"))
    assert [r.request_id for r in only_denied] == [denied.headers["X-Request-ID"]]


def test_kawa_audit_prints_the_records_of_a_user(client: Any, portal: Any, tokens: dict[Role, str]) -> None:
    import json

    from typer.testing import CliRunner

    from kawa.cli import _register
    from kawa.cli.app import app

    engineer = bearer(tokens[Role.DATA_ENGINEER])
    made = client.post("/api/topics", json={"name": "audited-topic"}, headers=engineer)
    assert made.status_code == 201
    client.post("/api/topics", json={"name": "other-topic"}, headers=bearer(tokens[Role.ADMIN]))
    _register()
    log_uri = portal.platform.config.log.uri
    home = str(portal.platform.config.home)
    shown = CliRunner().invoke(app, ["--home", home, "--log", log_uri, "audit", "--user", "data-engineer-user",
                                     "--json"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    rows = [json.loads(line) for line in shown.output.splitlines()]
    assert [(r["action"], r["resource"], r["request_id"]) for r in rows] == [
        ("topics.write", "/api/topics", made.headers["X-Request-ID"])
    ]
    by_action = CliRunner().invoke(app, ["--home", home, "--log", log_uri, "audit", "--action", "topics.write",
                                         "--json"])  # fmt: skip
    assert {json.loads(line)["user"] for line in by_action.output.splitlines()} == {"admin-user",
                                                                                    "data-engineer-user"}
    table = CliRunner().invoke(app, ["--home", home, "--log", log_uri, "audit"])
    assert table.exit_code == 0 and "request id" in table.output, table.output
