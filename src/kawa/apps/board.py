"""An app's board, declared: panels of kinds the portal renders generically.

The portal knows these kinds and nothing about any app. A board is built from one snapshot per refresh,
so every counter on it agrees with every other (a stage never shows more than the stage before it).

- :class:`Counters` — numbers of objects in buckets and of distinct events on topics, in pipeline order;
- :class:`ImageStrip` — the newest objects of a bucket as thumbnails, captioned by the part of the key
  that tells them apart, marked when the linked result row has a positive finding;
- :class:`Table` — the newest events of a topic as rows (fields of the topic's schema), each linking to
  the object it is about;
- :class:`TimeSeries` — events of a topic per time bucket (split by a field), drawn with a time axis;
- :class:`FlowGraph` — the app's buckets, topics, functions and routes as a graph.

Each panel names the permission its data needs (``action``, an :class:`~kawa.portal.permissions.Action`
value such as ``"view"`` or ``"deadletters.read"``); PHI buckets are further gated by ``phi.read``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Count:
    """One counter: objects in ``bucket``, or distinct events (by ``EventRef``) on ``topic``/``topics``."""

    label: str
    title: str
    bucket: str | None = None
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Counters:
    name: str
    counts: tuple[Count, ...]
    title: str = ""
    ordered: bool = True
    """Counts are stages of one pipeline: each is clamped to the one before it within the snapshot."""
    action: str = "view"


@dataclass(frozen=True)
class Marker:
    """Mark a thumbnail whose result row (joined on the object key) has ``field`` equal to ``value``."""

    field: str
    value: str
    label: str = ""


@dataclass(frozen=True)
class ImageStrip:
    name: str
    bucket: str
    title: str = ""
    limit: int = 30
    results_topic: str | None = None
    """Result rows on this topic are joined to the images by object key (for markers and links)."""
    marker: Marker | None = None
    action: str = "view"


@dataclass(frozen=True)
class Column:
    field: str
    title: str
    format: str = ""  # "", "percent", "ms", "time"


@dataclass(frozen=True)
class Table:
    name: str
    topic: str
    columns: tuple[Column, ...]
    title: str = ""
    limit: int = 10
    link_bucket_field: str | None = None
    link_key_field: str | None = None
    """Fields of a row naming the object it is about: the row links to that object (and its thumbnail)."""
    action: str = "view"


@dataclass(frozen=True)
class TimeSeries:
    """Events of ``topic`` per time bucket over the last ``span_s``, split by a field. ``time_field``: which time
    places an event — None, the event's own time (its ``time`` field, else its CloudEvent time); a field name; or
    ``"@received"``, when the log stored it (the right axis for a replay of history at a speed factor)."""

    name: str
    topic: str
    title: str = ""
    split_by: str | None = None
    span_s: float = 600.0
    action: str = "view"
    time_field: str | None = None


@dataclass(frozen=True)
class FlowGraph:
    name: str = "flow"
    title: str = "How events flow"
    action: str = "view"


Panel = Counters | ImageStrip | Table | TimeSeries | FlowGraph


@dataclass(frozen=True)
class BoardSpec:
    """The board of one app: its panels in display order."""

    title: str
    panels: tuple[Panel, ...]
    dead_letter_topics: tuple[str, ...] = ()
    """Dead letters of these topics are listed on the board to roles with ``deadletters.read``."""
