"""The data of every installed app's board, taken as one snapshot per refresh (the sampler's tick).

For each app, from its :class:`~kawa.apps.board.BoardSpec`: the distinct events of every topic a table,
time series or image strip reads (:class:`~kawa.portal.sources.events.EventTail`), the distinct events
of every counted topic and dead-letter topic (:class:`~kawa.portal.sources.distinct.DistinctEvents`), and
one listing of every bucket a counter or image strip reads. Everything is read downstream first — event
tails, then counted topics, then buckets from the last counter back to the first — so a stage never shows
more than the stage before it had; an ordered counters panel is also clamped so, should an upstream
object be deleted after it was processed. Every panel of one board build reads the same snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.apps.board import Counters, ImageStrip, Table, TimeSeries
from kawa.errors import KawaError, TopicNotFound
from kawa.portal.apps import installed_apps
from kawa.portal.sources.distinct import DistinctEvents
from kawa.portal.sources.events import EventRow, EventTail
from kawa.portal.sources.log import private_group, total_records

if TYPE_CHECKING:
    from kawa.apps.board import BoardSpec
    from kawa.portal.apps import AppView
    from kawa.portal.runtime import Portal

log = logging.getLogger("kawa.portal.boards")

LIST_EVERY_S = 0.5  # the sampler's own ticks re-list the buckets at most this often (and ~5% of a core)


@dataclass(frozen=True)
class Listing:
    bucket: str
    count: int
    newest: tuple[dict[str, Any], ...]  # key, size, time, content_type; newest first


@dataclass(frozen=True)
class BoardSnapshot:
    """One app's board data at ``taken_at``: every panel of one build reads only this."""

    taken_at: float = 0.0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # counters panel → label → value
    listings: dict[str, Listing] = field(default_factory=dict)  # bucket → listing
    events: dict[str, tuple[EventRow, ...]] = field(default_factory=dict)  # topic → distinct events
    dead_letters: tuple[dict[str, Any], ...] = ()


def event_topics(spec: BoardSpec) -> tuple[str, ...]:
    topics: list[str] = []
    for panel in spec.panels:
        if isinstance(panel, Table | TimeSeries):
            topics.append(panel.topic)
        elif isinstance(panel, ImageStrip) and panel.results_topic:
            topics.append(panel.results_topic)
    return tuple(dict.fromkeys(topics))


def counted_topics(spec: BoardSpec) -> tuple[str, ...]:
    topics = [t for p in spec.panels if isinstance(p, Counters) for c in p.counts for t in c.topics]
    return tuple(dict.fromkeys([*topics, *spec.dead_letter_topics]))


def listed_buckets(spec: BoardSpec) -> dict[str, int]:
    """Bucket → newest objects to keep, downstream first (the last counter's bucket first)."""
    out: dict[str, int] = {}
    for panel in reversed(spec.panels):
        if isinstance(panel, Counters):
            for count in reversed(panel.counts):
                if count.bucket:
                    out.setdefault(count.bucket, 0)
        elif isinstance(panel, ImageStrip):
            out[panel.bucket] = max(out.get(panel.bucket, 0), panel.limit)
    return out


class AppBoard:
    """The live data of one app's board. :meth:`refresh` runs in the sampler's thread."""

    def __init__(self, portal: Portal, app: AppView, spec: BoardSpec) -> None:
        self.portal, self.name, self.spec = portal, app.name, spec
        group = private_group(f"kawa.portal.board.{app.name}")
        log_ = portal.platform.log
        self._tails = {t: EventTail(log_, t, group) for t in event_topics(spec)}
        self._distinct = {t: DistinctEvents(log_, t, f"{group}.distinct") for t in counted_topics(spec)}
        self._snapshot = BoardSnapshot()
        self._listed: dict[str, Listing] = {}
        self._list_next_at = 0.0
        self._dlq_seen: int | None = None
        self._lock = threading.Lock()  # guards _snapshot

    def refresh(self, fresh: bool) -> None:
        events = {}
        for topic, tail in self._tails.items():
            tail.poll()
            events[topic] = tail.snapshot()
        distinct = {}
        for topic, counter in self._distinct.items():
            counter.poll()
            distinct[topic] = counter.count
        listings = self._listings(fresh)
        counts: dict[str, dict[str, int]] = {}
        for panel in self.spec.panels:
            if not isinstance(panel, Counters):
                continue
            values: dict[str, int] = {}
            previous: int | None = None
            for count in panel.counts:
                if count.bucket:
                    listing = listings.get(count.bucket)
                    value = listing.count if listing is not None else 0
                else:
                    value = sum(distinct.get(t, 0) for t in count.topics)
                if panel.ordered and previous is not None:
                    value = min(value, previous)
                values[count.label] = previous = value
            counts[panel.name] = values
        snapshot = BoardSnapshot(time.time(), counts, listings, events, self._dead_letters())
        with self._lock:
            self._snapshot = snapshot

    def _listings(self, fresh: bool) -> dict[str, Listing]:
        wanted = listed_buckets(self.spec)
        ok, _ = self.portal.store.available()
        if not ok or not wanted:
            return {}
        now = time.monotonic()
        if not fresh and now < self._list_next_at:
            return self._listed
        started = time.monotonic()
        out: dict[str, Listing] = {}
        for bucket, newest in wanted.items():  # downstream first
            view = self.portal.store.view(bucket, newest=max(newest, 1), fresh=True)
            out[bucket] = Listing(
                bucket,
                view.count,
                tuple(
                    {
                        "key": info.key,
                        "size": info.size,
                        "time": info.last_modified.timestamp() if info.last_modified else None,
                        "content_type": info.content_type,
                    }
                    for info in view.newest[:newest]
                ),
            )
        cost = time.monotonic() - started
        self._listed = out
        self._list_next_at = time.monotonic() + max(LIST_EVERY_S, 20 * cost)
        return out

    def _dead_letters(self, limit: int = 10) -> tuple[dict[str, Any], ...]:
        """The newest dead letters of the board's dead-letter topics, re-read only when they changed."""
        held = 0
        for topic in self.spec.dead_letter_topics:
            try:
                held += total_records(self.portal.log.describe(topic))
            except TopicNotFound:
                continue
        if held == self._dlq_seen:
            return self._snapshot.dead_letters
        from kawa.portal.sources.deadletters import describe_dead_letter

        rows: list[dict[str, Any]] = []
        for topic in self.spec.dead_letter_topics:
            try:
                records = self.portal.log.read(topic, limit=limit)
            except KawaError:
                continue
            rows.extend(describe_dead_letter(r).summary() for r in records)
        rows.sort(key=lambda r: r["time"] or 0, reverse=True)
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:  # a redelivered dead letter is listed once (its newest delivery)
            unique.setdefault(row["event_id"] or f"{row['topic']}/{row['partition']}/{row['offset']}", row)
        self._dlq_seen = held
        return tuple(list(unique.values())[:limit])

    def snapshot(self) -> BoardSnapshot:
        with self._lock:
            return self._snapshot

    def distinct_read(self, topic: str) -> int:
        """Deliveries read from a counted topic so far, duplicates included (for tests and diagnostics)."""
        counter = self._distinct.get(topic)
        return counter.records_read if counter is not None else 0

    def close(self) -> None:
        for tail in self._tails.values():
            tail.close()
        for counter in self._distinct.values():
            counter.close()


class AppBoards:
    """The boards of the apps running here, following ``platform.apps`` as apps start and stop."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self._boards: dict[str, AppBoard] = {}
        self._refresh_lock = threading.Lock()  # one refresh at a time: a slow one cannot overwrite a newer one

    def refresh(self, fresh: bool = True) -> None:
        with self._refresh_lock:
            running = {app.name: app for app in installed_apps(self.portal.platform) if app.board is not None}
            for name in [n for n, b in self._boards.items() if n not in running or running[n].board != b.spec]:
                self._boards.pop(name).close()
            for name, app in running.items():
                if name not in self._boards and app.board is not None:
                    self._boards[name] = AppBoard(self.portal, app, app.board)
            for name, board in list(self._boards.items()):
                try:
                    board.refresh(fresh)
                except KawaError as exc:
                    self.portal.sampler.last_error = f"{name}: {exc}"
                except Exception:  # a bug in one board must not stop the others or the live views
                    log.exception("refreshing the board of %s failed", name)

    def get(self, name: str) -> AppBoard | None:
        return self._boards.get(name)

    def close(self) -> None:
        with self._refresh_lock:
            for board in self._boards.values():
                board.close()
            self._boards.clear()
