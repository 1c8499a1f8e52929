"""Board panels follow the permission map: each panel declares the endpoint that owns its data, takes that
endpoint's action, and is present — in the JSON API, the page and the live stream — exactly for the roles
that endpoint answers. And the board's counts: one snapshot, distinct dead letters, never more processed
than uploaded."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kawa.events import new_event, to_kafka
from kawa.log.base import TopicSpec
from kawa.platform import Platform
from kawa.portal.boards import Board, Panel
from kawa.portal.permissions import Role, allowed
from kawa.portal.views import OVERVIEW_BOARD, XRAY_BOARD
from tests.portal.conftest import bearer, make_config
from tests.portal.test_api_store_xray import radiograph

SECRET_KEY = "patient-4711-scan.png"  # what a dead letter's reason may name: never shown to a viewer
XRAY_META = {"configured", "reason", "buckets", "model", "refreshed_at", "panels"}
BOARDS: list[Board[Any]] = [XRAY_BOARD, OVERVIEW_BOARD]


def xray_app(platform: Any) -> Any:
    from kawa.apps.xray.settings import XraySettings

    settings = XraySettings()
    for bucket in settings.buckets():
        platform.store.create_bucket(bucket)
    for topic in (settings.images_topic, settings.results_topic, settings.dead_letter_topic):
        platform.log.create_topic(TopicSpec(topic), exist_ok=True)
    from kawa.apps.runtime import RunningApp
    from kawa.apps.xray.plugin import declare

    platform.apps["xray"] = RunningApp(declare(settings))
    return settings


def dead_letter(platform: Any, topic: str, event_id: str, message: str) -> None:
    event = new_event("dev.kawa.store.object.created", "/store/xray-images", {"key": SECRET_KEY}, id=event_id,
                      subject=SECRET_KEY)
    key, value, headers = to_kafka(event)
    headers = [*headers, ("kawa-error-type", b"ValueError"), ("kawa-error-message", message.encode()),
               ("kawa-attempts", b"3"), ("kawa-function", b"xray.risk-assessment")]
    producer = platform.log.producer()
    try:
        producer.send(topic, value, key=key, headers=headers)
    finally:
        producer.close()


def api_routes() -> list[Any]:
    from kawa.portal.api import account, buckets, deadletters, functions, jobs, live, models, topics

    modules = (account, topics, buckets, functions, jobs, models, deadletters, live)
    return [route for module in modules for route in module.router.routes]


def owning_action(panel: Panel[Any]) -> str:
    """The action the panel's owning endpoint requires, read from the route's own dependency."""
    method, path = panel.source
    route = next(r for r in api_routes() if r.path == path and method in r.methods)
    pending, names = list(route.dependant.dependencies), []
    while pending:
        dependency = pending.pop()
        names.append(getattr(dependency.call, "__name__", ""))
        pending.extend(dependency.dependencies)
    required = [n for n in names if n.startswith("require_")]
    assert len(required) == 1, (path, names)
    return required[0].removeprefix("require_")


@pytest.mark.parametrize("board", BOARDS, ids=lambda b: b.name)
def test_every_panel_takes_the_action_of_the_endpoint_that_owns_its_data(board: Board[Any]) -> None:
    keys: list[str] = []
    for panel in board.panels:
        assert owning_action(panel) == panel.action.name.lower(), panel.name
        keys.extend(panel.keys)
    assert len(keys) == len(set(keys))  # a key belongs to one panel


@pytest.fixture
def populated(platform: Any, portal: Any) -> Any:
    settings = xray_app(platform)
    image = radiograph().png()
    platform.store.put(settings.incoming_bucket, "scan-00.png", image, content_type="image/png")
    platform.store.put(settings.processed_bucket, "scan-00-processed.png", image, content_type="image/png")
    dead_letter(platform, settings.dead_letter_topic, "dl-1", f"cannot decode {SECRET_KEY}")
    portal.sampler.tick()
    return settings


def expected_keys(role: Role) -> set[str]:
    return XRAY_META | {key for p in XRAY_BOARD.panels if allowed(role, p.action) for key in p.keys}


def endpoint_url(panel: Panel[Any], settings: Any) -> str:
    return panel.source[1].format(bucket=settings.processed_bucket, topic=settings.dead_letter_topic)


@pytest.mark.parametrize("role", list(Role))
def test_board_api_and_page_show_a_panel_iff_its_endpoint_answers_the_role(
    client: Any, tokens: dict[Role, str], populated: Any, role: Role
) -> None:
    headers = bearer(tokens[role])
    board = client.get("/api/xray/board", headers=headers).json()
    assert set(board) == expected_keys(role)
    page = client.get("/xray", headers=headers)
    assert page.status_code == 200
    initial = json.loads(re.search(r'<script type="application/json" id="initial">(.*?)</script>', page.text,
                                   re.S).group(1))  # type: ignore[union-attr]
    assert set(initial) == expected_keys(role)
    for panel in XRAY_BOARD.panels:
        answered = client.get(endpoint_url(panel, populated), headers=headers).status_code
        assert answered in (200, 403)
        may = answered == 200
        assert may == allowed(role, panel.action), panel.name
        assert (panel.name in board["panels"]) == may and all((k in board) == may for k in panel.keys)
        assert (f'data-panel="{panel.name}"' in page.text) == may, panel.name
    # What the viewer must not learn from the board, in any form.
    sees_dead_letters = allowed(role, XRAY_BOARD.panels[-1].action)
    assert (f"cannot decode {SECRET_KEY}" in page.text) == sees_dead_letters
    assert ('href="/deadletters"' in page.text) == sees_dead_letters  # nor a link to a page that answers 403
    assert (SECRET_KEY in json.dumps(board)) == sees_dead_letters
    if sees_dead_letters:
        assert board["dead_letters"][0]["error_message"] == f"cannot decode {SECRET_KEY}"


def test_live_stream_carries_only_the_panels_of_the_role(tmp_path: Path) -> None:
    from kawa.portal import serve

    platform = Platform(make_config(tmp_path / ".kawa", sample_interval_s=0.2))
    settings = xray_app(platform)
    dead_letter(platform, settings.dead_letter_topic, "dl-1", f"cannot decode {SECRET_KEY}")
    server = serve(platform)
    try:
        assert server.portal is not None
        tokens = {}
        for role in Role:
            server.portal.users.add_user(f"{role.value}-user", role, "a-long-password")
            tokens[role] = server.portal.users.create_token(f"{role.value}-user")[1]
        for role in Role:
            sees = allowed(role, XRAY_BOARD.panels[-1].action)
            update = first_update(server.url, tokens[role], until=lambda u, sees=sees: u.get("configured") is True
                                  and (not sees or bool(u.get("dead_letters"))))
            assert set(update) == expected_keys(role), role
            assert (SECRET_KEY in json.dumps(update)) == allowed(role, XRAY_BOARD.panels[-1].action)
    finally:
        server.stop()
        platform.stop()


def first_update(url: str, token: str, until: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    """The first ``update`` event of the board stream for which ``until`` holds."""
    found: list[dict[str, Any]] = []
    done = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{url}/api/stream/board", headers=bearer(token), timeout=timeout_s) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    update = json.loads(line[6:])
                    if until(update):
                        found.append(update)
                        done.set()
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert done.wait(timeout_s), "no matching update arrived on the board stream"
    thread.join(timeout_s)
    return found[0]


# --- counts: one snapshot, distinct ids ----------------------------------------------------------------


def metric(client: Any, headers: dict[str, str], name: str, stage: str) -> float:
    text = client.get("/metrics", headers=headers).text
    match = re.search(rf'^{name}{{stage="{stage}"}} (\S+)$', text, re.M)
    assert match, text
    return float(match.group(1))


def test_a_redelivered_dead_letter_counts_once(
    client: Any, tokens: dict[Role, str], platform: Any, portal: Any
) -> None:
    settings = xray_app(platform)
    dead_letter(platform, settings.dead_letter_topic, "same-id", "boom")
    dead_letter(platform, settings.dead_letter_topic, "same-id", "boom")  # the same event, delivered again
    counter: Any = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the board has read both deliveries (a condition)
        portal.sampler.tick()
        counter = portal.xray._dlq.get(settings.dead_letter_topic)
        if counter is not None and counter.records_read >= 2:
            break
    assert counter is not None and counter.records_read == 2
    headers = bearer(tokens[Role.ADMIN])
    board = client.get("/api/xray/board", headers=headers).json()
    assert board["counts"]["dead_lettered"] == 1
    assert [d["event_id"] for d in board["dead_letters"]] == ["same-id"]
    page = client.get("/xray", headers=headers).text
    assert re.search(r'id="count-dead_lettered"[^>]*>1<', page)
    assert metric(client, headers, "kawa_xray_objects", "dead_lettered") == 1


def test_processed_never_exceeds_uploaded(client: Any, tokens: dict[Role, str], platform: Any, portal: Any) -> None:
    settings = xray_app(platform)
    image = radiograph().png()
    # An object processed whose upload is gone (deleted after processing): the card still shows no more
    # processed than uploaded.
    platform.store.put(settings.processed_bucket, "orphan-processed.png", image, content_type="image/png")
    portal.sampler.tick()
    board = client.get("/api/xray/board", headers=bearer(tokens[Role.VIEWER])).json()
    assert board["counts"]["processed"] == 0 == board["counts"]["uploaded"]
    platform.store.delete(settings.processed_bucket, "orphan-processed.png")

    # A pipeline running beside the sampler: every upload is processed right after it is stored. Each
    # snapshot the board and /metrics show has processed <= uploaded.
    total = 40
    stop = threading.Event()

    def pipeline() -> None:
        for i in range(total):
            platform.store.put(settings.incoming_bucket, f"scan-{i:03d}.png", image, content_type="image/png")
            platform.store.put(settings.processed_bucket, f"scan-{i:03d}-processed.png", image,
                               content_type="image/png")
        stop.set()

    thread = threading.Thread(target=pipeline, daemon=True)
    thread.start()
    seen = []
    deadline = time.monotonic() + 120
    while True:
        assert (time.monotonic() < deadline and thread.is_alive()) or stop.is_set(), "the pipeline stalled"
        done = stop.is_set()
        portal.sampler.tick()
        counts = client.get("/api/xray/board", headers=bearer(tokens[Role.VIEWER])).json()["counts"]
        assert counts["processed"] <= counts["uploaded"], counts
        viewer = bearer(tokens[Role.VIEWER])
        processed = metric(client, viewer, "kawa_xray_objects", "processed")
        assert processed <= metric(client, viewer, "kawa_xray_objects", "uploaded")
        seen.append(counts["uploaded"])
        if done:
            break
    thread.join(10)
    assert counts == {"uploaded": total, "processed": total, "anonymized": 0, "dead_lettered": 0}
    assert seen == sorted(seen)


def test_the_docs_table_of_panels_is_the_code() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "portal.md").read_text()
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("| ") and line.count("|") == 5]
    documented = {}
    for line in rows:
        name, keys, endpoint, action = (cell.strip() for cell in line.strip("|").split("|"))
        documented[name.removeprefix("overview: ")] = (keys, endpoint, action)
    for board in BOARDS:
        for panel in board.panels:
            keys, endpoint, action = documented[panel.name]
            assert keys == ", ".join(f"`{k}`" for k in panel.keys), panel.name
            assert endpoint.startswith(f"`{panel.source[0]} {panel.source[1]}`"), panel.name
            assert action == f"`{panel.action.value}`", panel.name
