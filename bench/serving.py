"""Serving benchmark: the same scikit-learn model behind `kawa serve-model` and `mlflow models serve`.

    .venv/bin/python bench/serving.py [--requests N] [--concurrency C]

One run, one load generator (an asyncio aiohttp client with C connections, one single-row request each),
both servers with one worker process on this machine. Reports requests/s and p50/p99 latency, then the
hot-swap pause: the longest gap between request completions against kawa while the alias moves twice under
load. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

FEATURES = 16
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"server at {url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except ProcessLookupError:
            proc.wait()
            return
        except subprocess.TimeoutExpired:
            continue


async def load(
    url: str, bodies: list[bytes], concurrency: int, on_done: Any = None, until: asyncio.Event | None = None
) -> tuple[list[float], float, int]:
    """Send every body once with ``concurrency`` workers (or cycle through them until ``until`` is set);
    latencies (s), wall time, failures."""
    latencies: list[float] = []
    failures = 0
    queue = iter(bodies) if until is None else _cycle(bodies, until)
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            for body in queue:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        payload = await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok, payload = False, b""
                t1 = time.perf_counter()
                if ok:
                    latencies.append(t1 - t0)
                    if on_done is not None:
                        on_done(t1, payload)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started, failures


def _cycle(bodies: list[bytes], until: asyncio.Event) -> Any:
    while not until.is_set():
        yield from bodies[:100]


def summary(name: str, latencies: list[float], wall: float, failures: int) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    out = {
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "failures": failures,
    }
    print(
        f"{name:>7}: {out['rps']:8.1f} req/s  p50 {out['p50_ms']:6.2f} ms  p99 {out['p99_ms']:6.2f} ms  "
        f"failures {failures}",
        flush=True,
    )
    return out


def train_and_register(env: dict[str, str]) -> None:
    code = (
        "from kawa.ml.trainers import logistic_regression as t\n"
        f"for s in range(3): print(t('bench', n=2000, features={FEATURES}, seed=s)['version'])\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    subprocess.run(
        [sys.executable, "-m", "kawa.cli", "models", "promote", "bench", "1"], env=env, check=True, capture_output=True
    )


def main() -> None:
    faulthandler.enable()  # a crash in a native library (librdkafka, numpy) prints every thread's stack
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (server logs) afterwards")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kawa-bench-serving-"))
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "KAWA_HOME": str(tmp / "kawa"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'kawa' / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT / "src"),
        # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    (tmp / "kawa").mkdir(parents=True)
    print(f"bench home {tmp}; training 3 versions of 'bench' ({FEATURES} features)…", flush=True)
    train_and_register(env)

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(args.requests, FEATURES)).astype(np.float32).round(4).tolist()
    kawa_bodies = [
        json.dumps({"inputs": [{"name": "input-0", "shape": [1, FEATURES], "datatype": "FP32", "data": r}]}).encode()
        for r in rows
    ]
    mlflow_bodies = [json.dumps({"inputs": [r]}).encode() for r in rows]
    warm = min(500, args.requests)

    kawa_port, mlflow_port = free_port(), free_port()
    kawa_proc = start(
        [
            sys.executable,
            "-m",
            "kawa.cli",
            "serve-model",
            "bench@champion",
            "--port",
            str(kawa_port),
            "--max-batch",
            str(args.max_batch),
            "--max-wait-ms",
            str(args.max_wait_ms),
        ],
        env,
        tmp / "kawa-serve.log",
    )
    mlflow_proc = start(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            "models:/bench/1",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
        ],
        env,
        tmp / "mlflow-serve.log",
    )
    try:
        wait_ready(f"http://127.0.0.1:{kawa_port}/v2/health/ready", kawa_proc, tmp / "kawa-serve.log")
        wait_ready(f"http://127.0.0.1:{mlflow_port}/ping", mlflow_proc, tmp / "mlflow-serve.log")
        kawa_url = f"http://127.0.0.1:{kawa_port}/v2/models/bench/infer"
        mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"
        print(f"{args.requests} requests, concurrency {args.concurrency}, 1 row each", flush=True)
        asyncio.run(load(kawa_url, kawa_bodies[:warm], args.concurrency))
        asyncio.run(load(mlflow_url, mlflow_bodies[:warm], args.concurrency))
        k = summary("kawa", *asyncio.run(load(kawa_url, kawa_bodies, args.concurrency)))
        m = summary("mlflow", *asyncio.run(load(mlflow_url, mlflow_bodies, args.concurrency)))
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{kawa_port}/v2/models/bench/stats") as r:
            stats = json.loads(r.read())
        print(f"kawa batches: mean size {stats['mean_batch_size']}, max {stats['max_batch_size']}", flush=True)
        swap = swap_pause(kawa_url, kawa_bodies, args.concurrency, env)
    finally:
        stop(kawa_proc)
        stop(mlflow_proc)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "kawa_rps": k["rps"],
        "mlflow_rps": m["rps"],
        "kawa_p50_ms": k["p50_ms"],
        "mlflow_p50_ms": m["p50_ms"],
        "kawa_p99_ms": k["p99_ms"],
        "mlflow_p99_ms": m["p99_ms"],
        "speedup": round(k["rps"] / m["rps"], 2) if m["rps"] else None,
        "kawa_mean_batch": stats["mean_batch_size"],
        **swap,
    }
    print(json.dumps(result))


def swap_pause(url: str, bodies: list[bytes], concurrency: int, env: dict[str, str]) -> dict[str, Any]:
    """Load kawa while the alias moves 1 → 2 → 3 (promoted from this process, as a deploy tool would);
    the swap pause is the longest gap between completions from each move until 200 ms after the first response
    of the new version."""
    sys.path.insert(0, str(ROOT / "src"))
    from kawa.backends import open_backends
    from kawa.config import load_config
    from kawa.ml.registry import Registry

    registry = Registry(open_backends(load_config(env=env)))  # alias moves published on the backends' log
    registry.versions("bench")  # warm: MLflow imported, registry and log opened before the clock runs
    done: list[tuple[float, str]] = []
    on_done = lambda t, payload: done.append((t, json.loads(payload)["model_version"]))  # noqa: E731
    moves: list[float] = []
    promote_s: list[float] = []

    async def run() -> tuple[list[float], float, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(load(url, bodies, concurrency, on_done, until=stop))
        for version in (2, 3):
            await asyncio.sleep(1.0)
            moves.append(time.perf_counter())
            await asyncio.to_thread(registry.promote, "bench", version)
            promote_s.append(time.perf_counter() - moves[-1])
            deadline = time.perf_counter() + 15
            while not (done and done[-1][1] == str(version)) and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        stop.set()
        return await task

    _, _, failures = asyncio.run(run())
    registry.close()
    times = [t for t, _ in done]
    gaps = list(zip(times, [b - a for a, b in itertools.pairwise(times)], strict=False))
    steady = [g for a, g in gaps if a < moves[0] - 0.1]
    pauses, lags = [], []
    for i, moved in enumerate(moves):
        target = str(i + 2)
        switched = next((t for t, v in done if t > moved and v == target), moved)
        lags.append(switched - moved)
        pauses.append(max((g for a, g in gaps if moved - 0.01 <= a <= switched + 0.2), default=0.0))
    out = {
        "swap_pause_ms": round(max(pauses) * 1000, 2),
        "steady_max_gap_ms": round(max(steady, default=0.0) * 1000, 2),
        "swap_lag_ms": round(max(lags) * 1000, 1),
        "promote_ms": round(max(promote_s) * 1000, 1),
        "swap_failures": failures,
        "versions_served": sorted(set(v for _, v in done)),
    }
    print(
        f"hot swap: longest completion gap around the moves {out['swap_pause_ms']} ms "
        f"(steady-state max gap {out['steady_max_gap_ms']} ms), move→first new-version response "
        f"{out['swap_lag_ms']} ms (registry update {out['promote_ms']} ms), failures {failures}, "
        f"versions served {out['versions_served']}",
        flush=True,
    )
    return out


if __name__ == "__main__":
    main()
