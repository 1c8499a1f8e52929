"""Benchmark of the monitoring service: decision records through the windows, detectors and alerts.

    .venv/bin/python bench/monitor_service.py [--records N] [--features F]

N decision records (default 100,000) with F numeric features (default 20) and a score, ten per second of event
time, stationary except a 1 sd shift in the first feature over the last quarter; 60-second panes (``--pane``), 5-pane
sliding windows, the windowed tests (ARL0 1,000 windows) and the CUSUMs (ARL0 10^6 records). Measured:

1. the pure core (:class:`kawa.monitor.service.Monitor`) fed batches of 5,000 records;
2. the service end to end: the records written to an embedded log beforehand, then one ``step()`` that reads and
   decodes them, processes them and writes the events.

Rates are per second of wall time and per CPU second of the process (the per-core rate on a shared machine).
The last line is JSON: records, features, core_records_per_s, core_records_per_cpu_s, service_records_per_s,
service_records_per_cpu_s, events, alerts, rss_mb.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import numpy as np

from kawa.config import KawaConfig
from kawa.events.ref import EventRef
from kawa.log import open_log
from kawa.log.base import TopicSpec
from kawa.monitor.outcomes import publish
from kawa.monitor.records import DecisionRecord
from kawa.monitor.service import Monitor, MonitorConfig, MonitorService
from kawa.monitor.sketch import build_profile
from kawa.monitor.status import ALERT_EVENT


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--pane", type=float, default=60.0, help="pane seconds (records arrive ten per second)")
    args = parser.parse_args()
    n, f = args.records, args.features
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(f)]
    ref = build_profile({name: rng.normal(size=5000) for name in names}, score=rng.uniform(size=5000))
    x = rng.normal(size=(n, f))
    x[3 * n // 4 :, 0] += 1.0
    s = rng.uniform(size=n)
    records = [
        DecisionRecord(EventRef("kawa://bench", f"e{i}"), "m", 1, f"p{i % 1000}", 1.8e9 + i * 0.1,
                       score=float(s[i]), features=dict(zip(names, map(float, x[i]), strict=True)))
        for i in range(n)
    ]  # fmt: skip
    config = MonitorConfig("m", pane_s=args.pane, panes=5, window_size=500, window_arl0=1000.0, sequential_arl0=1e6)
    core = Monitor(config, lambda version: ref)
    core.track(1)  # calibrate outside the timing
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, n, 5000):
        core.add(records[i : i + 5000])
    core_wall, core_cpu = time.perf_counter() - wall, time.process_time() - cpu
    tmp = tempfile.mkdtemp(prefix="kawa-bench-")
    log = open_log(f"embedded:{tmp}/log", KawaConfig(home=f"{tmp}/.kawa"))
    log.create_topic(TopicSpec("decisions", 1, retention_ms=None))
    producer = log.producer()
    for r in records:
        publish(producer, "decisions", r.to_event("kawa://bench/fn"))
    producer.close()
    service = MonitorService(log, config, lambda version: ref).start()
    wall, cpu = time.perf_counter(), time.process_time()
    events = service.step()
    svc_wall, svc_cpu = time.perf_counter() - wall, time.process_time() - cpu
    service.close()
    log.close()
    print(f"core: {n / core_wall:,.0f} records/s ({n / core_cpu:,.0f} per CPU s); service end to end: "
          f"{n / svc_wall:,.0f} records/s ({n / svc_cpu:,.0f} per CPU s); {len(events)} events")  # fmt: skip
    print(json.dumps({
        "records": n, "features": f, "pane_s": args.pane, "core_records_per_s": round(n / core_wall),
        "core_records_per_cpu_s": round(n / core_cpu), "service_records_per_s": round(n / svc_wall),
        "service_records_per_cpu_s": round(n / svc_cpu), "events": len(events),
        "alerts": sum(e.type == ALERT_EVENT for e in events),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
