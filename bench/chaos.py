"""Chaos harness: the X-ray pipeline in separate processes while its processes and its broker crash.

    .venv/bin/python bench/chaos.py [--backend embedded|kafka] [--images N] [--kills N] [--broker-restarts N]
                                    [--broker-down-s S] [--seed S] [--workers W] [--rate R]
                                    [--settle-timeout S]

The ``risk-assessment`` function runs in ``kawa worker`` processes (``--workers``, default 1) and the
de-identification route in a ``kawa routes run`` process, on one log (``embedded``: the on-disk log under a
temporary Kawa home; ``kafka``: a broker of the harness's own, started by ``scripts/kafka.sh`` on free ports
beside any test broker) and one local store; this process uploads. N images go in at ``--rate`` per second,
a few of them damaged (a junk file, a truncated DICOM), which must be dead-lettered by the function and by the
route. Meanwhile, at seeded random times within the upload window:

- ``--kills`` SIGKILLs of a randomly chosen worker or route process, each restarted at once;
- ``--broker-restarts`` (kafka only) SIGKILLs of the broker JVM, started again on its data directory
  (``scripts/kafka.sh restart``) after ``--broker-down-s`` seconds (default 0: at once; the broker's log
  recovery itself takes 20-60 s; an outage beyond the producers' ``message.timeout.ms``, 30 s, makes records
  queued meanwhile fail their delivery). The embedded log has no broker process — its "broker" is the files each
  process writes — so broker restarts do not apply there (and are reported as 0).

An upload whose notification could not be published (broker down) is stored anyway and its notification waits
in the store's outbox (``unnotified_puts`` counts them); nobody acts: the outbox relay publishes it once the
broker is back. The harness waits until the
pipeline is idle — the function's and the route's consumer groups have no lag and every upload is accounted
for — or ``--settle-timeout`` passes, reads everything back and prints, as the last line of stdout, JSON:

``uploads``, ``rows``, ``processed``, ``anonymized``, ``result_events_distinct`` / ``result_events_total``,
``dead_letters_distinct`` / ``dead_letters_total`` (both dead-letter topics), ``predictions_distinct``
(distinct input events on the predictions topic; ``predictions_missing``: result rows whose input event has
none), ``lost`` (uploads not accounted for: a good image without all of its row, processed object, anonymized
object and result event, and not dead-lettered; a damaged one missing from either dead-letter topic — of them
``result_events_missing``: every effect there but the result event), ``good_dead_lettered`` (good images
dead-lettered instead), ``duplicate_effects`` (extra result rows for one image, and output objects seen with
more than one content for one input; ``output_writes`` counts every write seen, rewrites of the same bytes
included), the faults injected (``kills``; ``process_exits``: processes that exited on their own and were
started again, as a supervisor would) and the seconds taken. Topic duplicates with one id are allowed
(at-least-once delivery) and shown only as total vs distinct. Progress goes to stderr.

:func:`run` is the same harness as a function (``tests/apps/test_chaos.py`` runs a short version).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from rich.progress import Progress

from chaos_parts import (  # bench/
    Processes,
    Uploads,
    VersionWatch,
    console,
    group_lag,
    prepared_items,
    read_all,
    record_text,
    upload_all,
)
from kawa.apps.xray.deid import ROUTE_ID, deid_route_yaml
from kawa.apps.xray.pipeline import FUNCTION, processed_key
from kawa.apps.xray.settings import XraySettings, load_settings
from kawa.apps.xray.stack import XrayStack
from kawa.config import KawaConfig, load_config
from kawa.errors import KawaError
from kawa.events import EventRef, from_record
from kawa.store import iter_objects

ROOT = Path(__file__).resolve().parents[1]
KAWA = str(Path(sys.executable).parent / "kawa")
APP = """
from kawa.apps.xray.pipeline import build_app
from kawa.apps.xray.settings import load_settings

app = build_app(load_settings("xray.yaml"))
"""



class Broker(Protocol):
    """What the harness needs of a broker it may crash (``tests.fixtures.kafka.RestartableKafka``)."""

    @property
    def bootstrap(self) -> str: ...

    def kill(self) -> None: ...

    def start(self) -> None: ...


@dataclass(frozen=True)
class Options:
    backend: str = "embedded"
    images: int = 200
    kills: int = 5
    broker_restarts: int = 1
    broker_down_s: float = 0.0  # how long the broker stays dead before it is started again
    seed: int = 7
    workers: int = 1
    rate: float = 4.0
    settle_timeout: float = 180.0
    model: tuple[str, str] | None = None  # (tracking URI, artifact root) holding pneumonia@champion
    show_progress: bool = True


@dataclass
class Fault:
    at: float  # seconds after the first upload
    kind: str  # "kill" or "broker"
    target: int = 0  # process index for "kill"


def _schedule(opts: Options, n_procs: int, window: float) -> list[Fault]:
    rng = random.Random(opts.seed)
    targets = [i % n_procs for i in range(opts.kills)]  # every process is hit once before any twice
    rng.shuffle(targets)
    faults = [Fault(rng.uniform(0.1, 0.9) * window, "kill", target) for target in targets]
    if opts.backend == "kafka":
        faults += [Fault(rng.uniform(0.2, 0.8) * window, "broker") for _ in range(opts.broker_restarts)]
    return sorted(faults, key=lambda f: f.at)


def _deploy(opts: Options, workdir: Path, bootstrap: str | None) -> tuple[KawaConfig, XraySettings]:
    """kawa.yaml, xray.yaml, the app module and the routes file in ``workdir``; the model trained if needed."""
    tag = f"ch{uuid.uuid4().hex[:8]}"
    home = workdir / ".kawa"
    if opts.model is None:
        from kawa.apps.xray.train import train

        ml = {"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}", "artifact_root": (workdir / "art").as_uri()}
        with console.status("training the model (300 generated images)"):
            train(images=300, config=load_config(env={}, home=str(home), ml=ml), progress=None)
    else:
        ml = {"tracking_uri": opts.model[0], "artifact_root": opts.model[1]}
    ml["predictions_topic"] = f"{tag}-predictions"
    log_uri = f"kafka://{bootstrap}" if bootstrap else "embedded:"
    config_data = {"home": str(home), "log": {"uri": log_uri}, "ml": ml}
    xray = {
        "incoming_bucket": f"{tag}-images",
        "processed_bucket": f"{tag}-processed",
        "anonymized_bucket": f"{tag}-anonymized",
        "images_topic": f"{tag}-images",
        "results_topic": f"{tag}-results",
        "dead_letter_topic": f"{tag}-images.dlq",
        "deid_dead_letter_topic": f"{tag}-deid.dlq",
        "partitions": 4,
        "seed": opts.seed,
        "results_db": f"sqlite:///{workdir / 'results.db'}",
    }
    (workdir / "kawa.yaml").write_text(yaml.safe_dump(config_data))
    (workdir / "xray.yaml").write_text(yaml.safe_dump({"xray": xray}))
    (workdir / "chaosapp.py").write_text(APP)
    settings = load_settings(workdir / "xray.yaml")
    (workdir / "routes.yaml").write_text(deid_route_yaml(settings))
    return load_config(workdir / "kawa.yaml", env={}), settings


def run(opts: Options, broker: Broker | None = None) -> dict[str, Any]:
    """Run the harness once (see the module docstring); returns the JSON summary as a dict.

    With ``backend="kafka"`` and no ``broker``, a broker of its own is started and stopped again."""
    if opts.backend not in ("embedded", "kafka"):
        raise KawaError(f"unknown backend {opts.backend!r}: use embedded or kafka")
    owned = None
    if opts.backend == "kafka" and broker is None:
        sys.path.insert(0, str(ROOT))
        from tests.fixtures.kafka import RestartableKafka

        with console.status("starting a Kafka broker of the harness's own"):
            broker = owned = RestartableKafka.launch()
    workdir = Path(tempfile.mkdtemp(prefix="kawa-chaos-"))
    try:
        return _run(opts, broker, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if owned is not None:
            owned.stop()


def _run(opts: Options, broker: Broker | None, workdir: Path) -> dict[str, Any]:
    config, s = _deploy(opts, workdir, broker.bootstrap if broker else None)
    started = time.monotonic()
    routes = str(workdir / "routes.yaml")
    argvs = [[KAWA, "worker", "--app", "chaosapp:app", "--session-timeout-ms", "6000"] for _ in range(opts.workers)]
    argvs.append([KAWA, "routes", "run", ROUTE_ID, "--file", routes])
    groups = [f"kawa-fn-xray-{FUNCTION}", "xray-deid"]
    stack = XrayStack(config, s, host=False, route=False)
    stack.start()  # buckets, topics and the notification; the function and route run in the processes
    procs = Processes(workdir, argvs)
    uploads = Uploads()
    faults = _schedule(opts, len(argvs), opts.images / opts.rate)
    try:
        with console.status("starting the worker and route processes"):
            procs.wait_ready()
        items = prepared_items(s, opts.images, opts.seed)
        uploaded = threading.Event()
        uploader = threading.Thread(target=upload_all, args=(stack, items, opts.rate, uploads, uploaded))
        with VersionWatch(stack) as watch, _progress(opts) as bar:
            task = bar.add_task("uploading with faults", total=opts.images)
            t0 = time.monotonic()
            uploader.start()
            outages: list[threading.Thread] = []
            for fault in faults:
                _until(lambda f=fault: time.monotonic() - t0 >= f.at, bar, task, uploads, procs)  # type: ignore[misc]
                if fault.kind == "kill":
                    procs.kill_and_restart(fault.target)
                    name = " ".join(argvs[fault.target][1:3])
                    bar.console.print(f"t={time.monotonic() - t0:5.1f}s SIGKILL {name}, restarted")
                else:  # in its own thread: processes keep being killed while the broker is down
                    assert broker is not None
                    outage = threading.Thread(target=_outage, args=(broker, opts, stack, uploads, bar, t0))
                    outage.start()
                    outages.append(outage)
            _until(lambda: uploaded.is_set() and not any(o.is_alive() for o in outages), bar, task, uploads, procs)
            uploader.join()
            bar.update(task, description="waiting until idle", completed=0)
            deadline = time.monotonic() + opts.settle_timeout
            while True:
                procs.supervise()
                done = _accounted(stack, uploads)
                bar.update(task, completed=done)
                if done == opts.images and group_lag(stack.log, groups, s.images_topic) == 0:
                    break
                if time.monotonic() > deadline:
                    bar.console.print(f"not idle after {opts.settle_timeout:g} s; reading back what is there")
                    break
                time.sleep(1.0)  # polling interval of the condition above
        summary = _read_back(stack, uploads, watch)
    finally:
        procs.stop()
        stack.stop()
    summary.update(
        backend=opts.backend,
        kills=procs.restarts,
        process_exits=procs.crashes,
        broker_restarts=sum(f.kind == "broker" for f in faults),
        broker_down_s=opts.broker_down_s if broker is not None else 0.0,
        seconds=round(time.monotonic() - started, 1),
    )
    return summary


def _progress(opts: Options) -> Progress:
    return Progress(console=console, disable=not opts.show_progress, transient=False)


def _until(cond: Callable[[], bool], bar: Progress, task: Any, uploads: Uploads, procs: Processes) -> None:
    while not cond():
        procs.supervise()
        with uploads.lock:
            bar.update(task, completed=len(uploads.damaged))
        time.sleep(0.1)  # polling interval of cond


def _outage(broker: Broker, opts: Options, stack: XrayStack, uploads: Uploads, bar: Progress, t0: float) -> None:
    """SIGKILL the broker, keep it down ``broker_down_s``, start it on its data, publish what waited."""
    killed = time.monotonic()
    broker.kill()
    bar.console.print(
        f"t={killed - t0:5.1f}s SIGKILL broker; down {opts.broker_down_s:g} s, then restarted on its data"
    )
    time.sleep(opts.broker_down_s)  # the outage itself (a fault's duration, not a wait for a condition)
    broker.start()
    bar.console.print(f"t={time.monotonic() - t0:5.1f}s broker answers again ({time.monotonic() - killed:.1f} s dark)")


def _accounted(stack: XrayStack, uploads: Uploads) -> int:
    """A cheap count for the idle check: good images with a row and both outputs, plus damaged images when
    both dead-letter topics hold at least that many records."""
    s = stack.settings
    rows = {r.object_key for r in stack.results.rows()}
    processed = {o.key for o in iter_objects(stack.store, s.processed_bucket, "chaos/")}
    anonymized = {o.key for o in iter_objects(stack.store, s.anonymized_bucket, "chaos/")}
    with uploads.lock:
        damaged = dict(uploads.damaged)
    good = sum(
        1 for k, bad in damaged.items() if not bad and k in rows and processed_key(k) in processed and k in anonymized
    )
    n_bad = sum(damaged.values())
    dlq = min(stack.dead_lettered(s.dead_letter_topic), stack.dead_lettered(s.deid_dead_letter_topic))
    return good + (n_bad if dlq >= n_bad else 0)


def _read_back(stack: XrayStack, uploads: Uploads, watch: VersionWatch) -> dict[str, Any]:
    s = stack.settings
    log = stack.log
    rows = stack.results.rows()
    rows_per_key: dict[str, int] = {}
    for row in rows:
        rows_per_key[row.object_key] = rows_per_key.get(row.object_key, 0) + 1
    processed = {o.key for o in iter_objects(stack.store, s.processed_bucket, "chaos/")}
    anonymized = {o.key for o in iter_objects(stack.store, s.anonymized_bucket, "chaos/")}
    results = read_all(log, s.results_topic, stack.topic_size(s.results_topic))
    result_events = [from_record(r) for r in results]
    result_ids = {(e.get_source(), e.get_id()) for e in result_events}
    result_keys = {(e.get_data() or {}).get("key") for e in result_events}  # type: ignore[union-attr]
    dead: dict[str, set[str]] = {}
    dead_total = 0
    keys = list(uploads.damaged)
    for topic in (s.dead_letter_topic, s.deid_dead_letter_topic):
        records = read_all(log, topic, stack.topic_size(topic))
        dead_total += len(records)
        texts = [record_text(r) for r in records]
        dead[topic] = {k for k in keys if any(k in t for t in texts)}
    predictions_topic = stack.config.ml.predictions_topic
    predictions = read_all(log, predictions_topic, stack.topic_size(predictions_topic))
    # Joined on the input event's EventRef (source + id), the one identity rows and predictions share.
    prediction_ids = {EventRef.find(from_record(r).get_data() or {}) for r in predictions}  # type: ignore[arg-type]
    row_event_ids = {row.ref for row in rows}
    lost = good_dead = missing_events = 0
    for key, bad in uploads.damaged.items():
        if bad:
            lost += not all(key in named for named in dead.values())
            continue
        complete = rows_per_key.get(key) and processed_key(key) in processed and key in anonymized
        if complete and key in result_keys:
            continue
        if complete:
            missing_events += 1  # every effect but its result event, which is lost
            lost += 1
            continue
        if any(key in named for named in dead.values()):
            good_dead += 1
        else:
            lost += 1
    duplicate_rows = sum(n - 1 for n in rows_per_key.values())
    duplicate_versions = sum(len(etags) - 1 for etags in watch.etags.values())
    return {
        "uploads": len(uploads.damaged),
        "damaged": sum(uploads.damaged.values()),
        "unnotified_puts": len(uploads.unnotified),
        "rows": len(rows),
        "processed": len(processed),
        "anonymized": len(anonymized),
        "result_events_distinct": len(result_ids),
        "result_events_total": len(results),
        "dead_letters_distinct": sum(len(named) for named in dead.values()),
        "dead_letters_total": dead_total,
        "predictions_distinct": len(prediction_ids - {None}),
        "predictions_total": len(predictions),
        "predictions_missing": len(row_event_ids - prediction_ids),
        "result_events_missing": missing_events,
        "output_writes": sum(len(w) for w in watch.writes.values()),
        "lost": lost,
        "good_dead_lettered": good_dead,
        "duplicate_effects": duplicate_rows + duplicate_versions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "kafka"], default="embedded")
    parser.add_argument("--images", type=int, default=200, help="uploads, about 5%% of them damaged")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of worker and route processes")
    parser.add_argument("--broker-restarts", type=int, default=1, help="kafka only: SIGKILL + restart the broker")
    parser.add_argument(
        "--broker-down-s",
        type=float,
        default=0.0,
        help="seconds the broker stays dead before its restart (beyond 30 s, queued records time out)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=1, help="kawa worker processes for the function")
    parser.add_argument("--rate", type=float, default=4.0, help="uploads per second")
    parser.add_argument("--settle-timeout", type=float, default=180.0, help="seconds to wait for idle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kawa.log.kafka.librdkafka").setLevel(logging.CRITICAL)  # "connection refused" while down
    opts = Options(
        backend=args.backend,
        images=args.images,
        kills=args.kills,
        broker_restarts=args.broker_restarts,
        broker_down_s=args.broker_down_s,
        seed=args.seed,
        workers=args.workers,
        rate=args.rate,
        settle_timeout=args.settle_timeout,
    )
    print(json.dumps(run(opts)))


if __name__ == "__main__":
    main()
