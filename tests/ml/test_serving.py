"""`kawa serve-model`: Open Inference Protocol v2 over real HTTP, micro-batching, errors, alias moves."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.ml.registry import Registry
from kawa.ml.serving import ModelServer, free_port
from tests.ml.helpers import register_versions, wait_for

X = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)


def infer_body(x: np.ndarray, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    tensor = {"name": "input-0", "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}
    return {"inputs": [tensor], **extra}


@pytest.fixture
def served(config: KawaConfig, memory_log: Any, model_name: str) -> Iterator[tuple[ModelServer, list[int], Registry]]:
    versions = register_versions(model_name, 2)
    registry = Registry(config, memory_log)
    registry.promote(model_name, versions[0])
    server = ModelServer(
        config,
        f"{model_name}@champion",
        port=free_port(),
        max_batch=16,
        max_wait_ms=5,
        log=memory_log,
        poll_interval_s=0.5,
    ).start()
    yield server, versions, registry
    server.stop()
    registry.close()


def test_health_metadata_and_infer(served: tuple[ModelServer, list[int], Registry], model_name: str) -> None:
    server, (v1, _), _ = served
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        meta = client.get(f"/v2/models/{model_name}").json()
        assert meta["name"] == model_name and meta["versions"] == [str(v1)]
        assert meta["inputs"][0]["shape"] == [-1, 4] and meta["platform"] == "kawa-sklearn"
        r = client.post(f"/v2/models/{model_name}/infer", json=infer_body(X, id="req-1"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == model_name and body["model_version"] == str(v1) and body["id"] == "req-1"
        out = body["outputs"][0]
        expected = server.handle.current().predict(X)
        assert out["shape"] == [3] and out["datatype"] == "INT64" and out["data"] == expected.tolist()
        # Integer and FP64 inputs are cast to what the model takes.
        assert (
            client.post(f"/v2/models/{model_name}/infer", json=infer_body(X.astype(np.float64), "FP64")).status_code
            == 200
        )
        ints = np.ones((1, 4), dtype=np.int64)
        assert client.post(f"/v2/models/{model_name}/infer", json=infer_body(ints, "INT64")).status_code == 200
        r = client.post(f"/v2/models/{model_name}/versions/{v1}/infer", json=infer_body(X))
        assert r.status_code == 200


BAD_REQUESTS: list[tuple[Any, int, str]] = [
    (lambda b: b["inputs"][0].update(shape=[3, 5]), 400, "data has 12 values but shape [3, 5] holds 15"),
    (lambda b: b["inputs"][0].update(shape=[4, 3]), 400, "model expects shape [-1, 4]; got [4, 3]"),
    (lambda b: b["inputs"][0].update(datatype="BYTES"), 400, "BYTES is not supported"),
    (lambda b: b["inputs"][0].update(datatype="FP128"), 400, "unknown datatype 'FP128'"),
    (lambda b: b["inputs"][0].update(data=["a"] * 12), 400, "must be numbers of datatype FP32"),
    (lambda b: b["inputs"][0].update(datatype="INT32"), 400, "INT32 needs integers"),
    (lambda b: b["inputs"][0].update(shape="3x4"), 400, "input shape must be"),
    (lambda b: b["inputs"].append(dict(b["inputs"][0])), 400, "exactly one input tensor"),
    (lambda b: b.pop("inputs"), 400, '"inputs" list'),
]


def test_oip_errors_for_bad_shapes_and_datatypes(
    served: tuple[ModelServer, list[int], Registry], model_name: str
) -> None:
    server = served[0]
    for mutate, status, message in BAD_REQUESTS:
        body = infer_body(X)
        mutate(body)
        r = httpx.post(f"{server.url}/v2/models/{model_name}/infer", json=body)
        assert r.status_code == status, (message, r.text)
        assert message in r.json()["error"]
    # The server is still fine afterwards.
    assert httpx.post(f"{server.url}/v2/models/{model_name}/infer", json=infer_body(X)).status_code == 200


def test_routing_errors(served: tuple[ModelServer, list[int], Registry], model_name: str) -> None:
    server = served[0]
    with httpx.Client(base_url=server.url) as client:
        r = client.post("/v2/models/nope/infer", json=infer_body(X))
        assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
        assert client.get(f"/v2/models/{model_name}/versions/999").status_code == 404
        assert client.get("/v3/whatever").status_code == 404
        assert client.get(f"/v2/models/{model_name}/infer").status_code == 405
        r = client.post(f"/v2/models/{model_name}/infer", content=b"{not json")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


async def _load(url: str, body: dict[str, Any], requests: int, concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> httpx.Response:
            async with sem:
                return await client.post("infer", json=body)

        return await asyncio.gather(*(one() for _ in range(requests)))


def test_micro_batching_under_concurrent_load(served: tuple[ModelServer, list[int], Registry], model_name: str) -> None:
    server = served[0]
    responses = asyncio.run(_load(f"{server.url}/v2/models/{model_name}/", infer_body(X[:1]), 300, 32))
    assert all(r.status_code == 200 for r in responses)
    stats = httpx.get(f"{server.url}/v2/models/{model_name}/stats").json()
    assert stats["requests"] >= 300
    assert stats["max_batch_size"] > 1 and stats["batches"] < stats["requests"]
    assert stats["max_batch_size"] <= 16
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'kawa_inference_requests_total{{model="{model_name}"}}' in metrics


def test_promote_and_rollback_move_what_is_served_without_failures(
    served: tuple[ModelServer, list[int], Registry], model_name: str
) -> None:
    server, (v1, v2), registry = served
    url = f"{server.url}/v2/models/{model_name}/infer"
    seen: list[tuple[float, str]] = []  # (when the request was sent, version that answered)
    statuses: list[int] = []
    marks: dict[str, float] = {}

    async def drive() -> None:
        async with httpx.AsyncClient(timeout=30) as client:

            async def loop() -> None:
                while True:
                    sent = time.monotonic()
                    r = await client.post(url, json=infer_body(X[:1]))
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        seen.append((sent, r.json()["model_version"]))

            tasks = [asyncio.create_task(loop()) for _ in range(4)]
            await asyncio.sleep(0.3)
            marks["promote"] = time.monotonic()
            await asyncio.to_thread(registry.promote, model_name, v2)
            await asyncio.to_thread(wait_for, lambda: server.handle.version == v2, 10)
            marks["v2_served"] = time.monotonic()
            await asyncio.sleep(0.3)
            marks["rollback"] = time.monotonic()
            await asyncio.to_thread(registry.rollback, model_name)
            await asyncio.to_thread(wait_for, lambda: server.handle.version == v1, 10)
            marks["v1_served"] = time.monotonic()
            await asyncio.sleep(0.3)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(drive())
    assert statuses and all(s == 200 for s in statuses)  # no failed request across both moves
    # A request sent after the server swapped is answered by the new version (a batch takes the version
    # current when it runs, which is after the request was queued); before the move, by the old one.
    assert all(v == str(v1) for sent, v in seen if sent < marks["promote"])
    assert all(v == str(v2) for sent, v in seen if marks["v2_served"] < sent < marks["rollback"])
    assert all(v == str(v1) for sent, v in seen if sent > marks["v1_served"])
    assert sum(1 for sent, _ in seen if marks["v2_served"] < sent < marks["rollback"]) > 0
    assert sum(1 for sent, _ in seen if sent > marks["v1_served"]) > 0
    assert server.handle.swaps == 2


def test_serve_model_cli_follows_alias_moves(config: KawaConfig, model_name: str, tmp_path: Path) -> None:
    """The real command in its own process, embedded log: predictions logged, promote followed via kawa.models."""
    from kawa.log import open_log

    v1, v2 = register_versions(model_name, 2)
    log = open_log(config.log.uri, config)
    registry = Registry(config, log)
    registry.promote(model_name, v1)
    port = free_port()
    out = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kawa.cli",
            "serve-model",
            f"{model_name}@champion",
            "--port",
            str(port),
            "--poll-interval",
            "30",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/v2/models/{model_name}"

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                return False

        wait_for(ready, timeout=60, interval=0.2)
        assert httpx.post(f"{base}/infer", json=infer_body(X)).json()["model_version"] == str(v1)
        registry.promote(model_name, v2)  # poll interval is 30 s: only the kawa.models event can explain a swap
        wait_for(
            lambda: httpx.post(f"{base}/infer", json=infer_body(X)).json()["model_version"] == str(v2),
            timeout=15,
            interval=0.1,
        )
        consumer = log.consumer("t", ["predictions"], auto_offset_reset="earliest")
        logged = wait_for(lambda: consumer.poll(timeout=0.5, max_records=100), timeout=15)
        consumer.close()
        assert len(logged) >= 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        out.close()
        registry.close()
        log.close()
    assert proc.returncode in (0, -signal.SIGTERM)
