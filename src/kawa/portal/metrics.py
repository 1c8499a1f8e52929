"""Prometheus ``/metrics``: the platform's numbers as scrape-time metrics.

Each scrape reads the same sources the JSON API reads, so a value here equals the API's at the same moment
(``tests/portal/test_metrics.py`` checks it). Metric names are documented in ``docs/portal.md`` and used by
``deploy/grafana/kawa-portal.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from kawa.errors import KawaError
from kawa.portal.sources.log import total_records, written_records

if TYPE_CHECKING:
    from kawa.portal.runtime import Portal

log = logging.getLogger("kawa.portal.metrics")


class PlatformCollector(Collector):
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    def collect(self) -> Iterator[Metric]:
        for part in (self._log, self._functions, self._jobs, self._models, self._results):
            try:
                yield from part()
            except KawaError as exc:  # one absent capability must not empty the scrape
                log.debug("metrics: %s skipped: %s", part.__name__, exc)

    def _log(self) -> Iterator[Metric]:
        portal = self.portal
        written = CounterMetricFamily("kawa_topic_records", "Records ever written to the topic", labels=["topic"])
        held = GaugeMetricFamily("kawa_topic_records_held", "Records the topic holds now", labels=["topic"])
        rate = GaugeMetricFamily("kawa_topic_rate_per_second", "Write rate over the last seconds", labels=["topic"])
        lag = GaugeMetricFamily(
            "kawa_consumer_lag", "Records the group has not yet committed", labels=["group", "topic", "owner"]
        )
        from kawa.portal.api.topics import consumers_of

        consumers = consumers_of(portal)
        for info in portal.log.topics():
            written.add_metric([info.name], written_records(info))
            held.add_metric([info.name], total_records(info))
            rate.add_metric([info.name], round(portal.log.rates.rate(info.name), 3))
            for group, owner in consumers.get(info.name, []):
                lag.add_metric([group, info.name, owner], sum(r.lag for r in portal.log.lag(group, [info.name])))
        yield from (written, held, rate, lag)

    def _functions(self) -> Iterator[Metric]:
        views = self.portal.functions.functions()
        labels = ["function", "app"]
        replicas = GaugeMetricFamily("kawa_function_replicas", "Running replicas", labels=labels)
        desired = GaugeMetricFamily("kawa_function_desired_replicas", "Replicas the autoscaler wants", labels=labels)
        in_flight = GaugeMetricFamily("kawa_function_in_flight", "Invocations running now", labels=labels)
        rate = GaugeMetricFamily("kawa_function_rate_per_second", "Completed invocations per second", labels=labels)
        latency = GaugeMetricFamily(
            "kawa_function_latency_ms", "Handler latency percentile (recent window)", labels=[*labels, "quantile"]
        )
        e2e = GaugeMetricFamily("kawa_function_end_to_end_p99_ms", "Record timestamp to completion, p99", labels=labels)
        events = CounterMetricFamily("kawa_function_events", "Events by outcome", labels=[*labels, "outcome"])
        errors = CounterMetricFamily("kawa_function_errors", "Failed attempts (each retry counts)", labels=labels)
        for view in views:
            s, key = view.stats, [view.name, view.spec.app]
            replicas.add_metric(key, s.replicas)
            desired.add_metric(key, s.desired_replicas)
            in_flight.add_metric(key, s.in_flight)
            rate.add_metric(key, s.rate_per_s)
            for quantile, value in (("0.5", s.latency_p50_ms), ("0.99", s.latency_p99_ms)):
                if value is not None:
                    latency.add_metric([*key, quantile], value)
            if s.end_to_end_p99_ms is not None:
                e2e.add_metric(key, s.end_to_end_p99_ms)
            for outcome, value in (
                ("succeeded", s.succeeded),
                ("dead_lettered", s.dead_lettered),
                ("filtered", s.filtered),
                ("duplicate", s.duplicates),
            ):
                events.add_metric([*key, outcome], value)
            errors.add_metric(key, s.failed_attempts)
        yield from (replicas, desired, in_flight, rate, latency, e2e, events, errors)

    def _jobs(self) -> Iterator[Metric]:
        ok, _ = self.portal.jobs.available()
        if not ok:
            return
        by_state: Counter[tuple[str, str]] = Counter()
        gpus = 0
        for job in self.portal.jobs.jobs(10_000):
            by_state[(str(job.state), job.spec.project)] += 1
            if str(job.state) == "running":
                gpus += len(job.gpus)
        jobs = GaugeMetricFamily("kawa_jobs", "Jobs by state and project", labels=["state", "project"])
        for (state, project), count in sorted(by_state.items()):
            jobs.add_metric([state, project], count)
        inventory = self.portal.jobs.inventory()
        total = GaugeMetricFamily("kawa_gpus", "GPUs the scheduler may hand out")
        total.add_metric([], inventory.gpu_count)
        allocated = GaugeMetricFamily("kawa_gpus_allocated", "GPUs held by running jobs")
        allocated.add_metric([], gpus)
        yield from (jobs, total, allocated)

    def _models(self) -> Iterator[Metric]:
        ok, _ = self.portal.models.available()
        if not ok:
            return
        alias = GaugeMetricFamily(
            "kawa_model_alias_version", "The version an alias points to (in use)", labels=["model", "alias"]
        )
        latest = GaugeMetricFamily("kawa_model_latest_version", "The newest registered version", labels=["model"])
        for model in self.portal.models.models():
            for name, version in sorted(model.aliases.items()):
                alias.add_metric([model.name, name], version)
            if model.latest_version is not None:
                latest.add_metric([model.name], model.latest_version)
        yield from (alias, latest)

    def _results(self) -> Iterator[Metric]:
        """Per installed app: its counters (``kawa_app_objects``) and, from the time series split by
        ``label`` or by model version, its distinct result events (counted over the events the portal
        follows: from an hour back, at most the last 20,000)."""
        from kawa.apps.board import Counters, TimeSeries
        from kawa.portal.apps import installed_apps
        from kawa.portal.board_view import split_value

        by_label = CounterMetricFamily(
            "kawa_results",
            "Results by label, counted since the portal started following them (from an hour back)",
            labels=["app", "label"],
        )
        by_version = CounterMetricFamily(
            "kawa_results_by_model_version",
            "Results by model version, counted like kawa_results",
            labels=["app", "model_version"],
        )
        stages = GaugeMetricFamily("kawa_app_objects", "Counts of each app's board, by stage", labels=["app", "stage"])
        emitted: set[tuple[str, bool]] = set()
        for app in installed_apps(self.portal.platform):
            board = self.portal.boards.get(app.name)
            if board is None:
                continue
            snapshot = board.snapshot()
            for panel in board.spec.panels:
                if isinstance(panel, Counters):
                    for stage, count in snapshot.counts.get(panel.name, {}).items():
                        stages.add_metric([app.name, stage], count)
                elif isinstance(panel, TimeSeries) and panel.split_by in ("label", "model_version", "version"):
                    family = by_label if panel.split_by == "label" else by_version
                    if (app.name, panel.split_by == "label") in emitted:
                        continue  # one series per app and family
                    emitted.add((app.name, panel.split_by == "label"))
                    counts = Counter(split_value(row, panel.split_by) for row in snapshot.events.get(panel.topic, ()))
                    for value, count in sorted(counts.items()):
                        family.add_metric([app.name, value], count)
        yield from (by_label, by_version, stages)


def build_registry(portal: Portal) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(portal))
    return registry
