"""What a rebalance costs the monitor worker: the replay of a newly assigned decisions partition.

    .venv/bin/python bench/monitor_worker.py [--records N] [--models M] [--log URI]

N decision records (default 40,000) of M models (default 4) on a 2-partition decisions topic (``--log``: default a
fresh embedded log; ``kafka://host:port`` for Apache Kafka), three numeric features and a category each, one
record per model and second of event time, 300-second tumbling windows of at least 250 records. Measured: a
:class:`kawa.monitor.worker.MonitorWorker` joining the group and replaying every partition from its start (the
detectors calibrated beforehand, as a worker that held the models before has them), until the group's committed
offsets reach the end; then a second member over the same log and topics, which finds every event written (what a
member taking over a partition does). The last line is JSON: records, models, first_s, first_records_per_s,
takeover_s, takeover_records_per_s, events.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from kawa.config import KawaConfig
from kawa.events.cloudevents import to_kafka
from kawa.events.ref import EventRef
from kawa.log import open_log
from kawa.log.base import EventLog, TopicSpec
from kawa.monitor.records import DecisionRecord
from kawa.monitor.service import Monitor, MonitorConfig
from kawa.monitor.sketch import build_profile
from kawa.monitor.worker import MonitorWorker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--log", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ref = build_profile({f: rng.normal(size=4000) for f in "abc"} | {"ward": rng.choice(["x", "y"], 4000).tolist()},
                        score=rng.uniform(size=4000), categorical=["ward"])  # fmt: skip
    models = [f"model-{i}" for i in range(args.models)]
    tag = uuid.uuid4().hex[:8]
    template = MonitorConfig("*", pane_s=300.0, panes=1, window_size=250, window_arl0=100.0,
                             decisions_topic=f"bench-decisions-{tag}", alerts_topic=f"bench-alerts-{tag}")  # fmt: skip
    for m in models:  # calibrate once (cached in the process), as a warm member has its detectors
        Monitor(dataclasses.replace(template, model=m), lambda _v: ref).track(1)
    home = Path(tempfile.mkdtemp(prefix="kawa-bench-"))
    log: EventLog = open_log(args.log or f"embedded:{home / 'log'}", KawaConfig(home=home / ".kawa"))
    log.create_topic(TopicSpec(template.decisions_topic, 2, retention_ms=None))
    per_model = args.records // len(models)
    x = rng.normal(size=(per_model * len(models), 3))
    producer = log.producer()
    for i in range(per_model * len(models)):
        second, m = divmod(i, len(models))
        record = DecisionRecord(EventRef("kawa://bench", f"e{i}"), models[m], 1, f"p{i % 97}", 1.8e9 + second,
                                score=float(rng.uniform()),
                                features={"a": float(x[i, 0]), "b": float(x[i, 1]), "c": float(x[i, 2]), "ward": "x"})
        key, value, headers = to_kafka(record.to_event("kawa://bench/fn"))
        producer.produce(template.decisions_topic, value, key=key, headers=headers)
    producer.close()
    total = per_model * len(models)

    def run(group: str) -> tuple[float, int]:
        worker = MonitorWorker(log, template, lambda _m, _v: ref, group=group)
        began = time.perf_counter()
        worker.start()
        while True:
            worker.step(timeout_s=0.05)
            lag = log.lag(group, [template.decisions_topic])
            if len(worker.owned) == 2 and lag and all(r.lag == 0 for r in lag) and worker.records >= total:
                break
        took = time.perf_counter() - began
        emitted = worker.emitted
        worker.close()
        return took, emitted

    first_s, events = run(f"bench-group-{tag}")
    takeover_s, again = run(f"bench-group-{tag}-2")
    assert again == 0, "a member replaying what another wrote writes nothing"
    print(f"{total} records of {len(models)} models: first member {first_s:.2f} s ({total / first_s:,.0f}/s), "
          f"a member taking both partitions over {takeover_s:.2f} s ({total / takeover_s:,.0f}/s), {events} events",
          file=sys.stderr)  # fmt: skip
    print(json.dumps({"records": total, "models": len(models), "first_s": round(first_s, 3),
                      "first_records_per_s": round(total / first_s), "takeover_s": round(takeover_s, 3),
                      "takeover_records_per_s": round(total / takeover_s), "events": events}))  # fmt: skip
    log.close()


if __name__ == "__main__":
    main()
