"""Tuning of the function host (poll, tick and commit periods, read-ahead, drain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class HostOptions:
    """Host tuning. Defaults suit production; tests shorten the intervals."""

    tick_s: float = 0.1  # autoscaler sample + decision period
    poll_timeout_s: float = 0.1  # longest a poll blocks (bounds shutdown and mark latency)
    commit_interval_s: float = 0.5
    max_buffered: int = 0  # events read ahead per function; 0 = 4 * max capacity (at least 64)
    drain_timeout_s: float = 30.0
    flush_timeout_s: float = 10.0  # longest a batch waits for the log's acknowledgement before trying again
    session_timeout_ms: int | None = None
    create_topics: bool = True
    dedupe_retention_s: float = 7 * 24 * 3600.0
    replicas: Literal["auto", "process", "thread"] | None = None  # overrides every function's ``replicas``
