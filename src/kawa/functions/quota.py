"""The ``function_replicas`` quota: how many replicas a project's functions may run at once in one host.

Pure rule plus one small thread-safe ledger. Each function's runner asks the ledger before it scales
(:meth:`ReplicaBudget.claim`); the grant is the rule :func:`grant`:

- a project with no limit (``None``, ``default`` until an admin sets one) gets what it asks;
- otherwise a function gets at most the limit less what the project's other functions hold, where a function
  holds at least its floor (``min_scale``): the floors are reserved, so a busy function never takes the room a
  quiet one is promised.

:func:`floors_over` refuses, before anything starts, a project whose floors alone exceed its quota. The
autoscaler's wish stays visible as ``desired_replicas``; ``replicas`` is what the quota granted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["ReplicaBudget", "Share", "floors_over", "grant"]


@dataclass(frozen=True)
class Share:
    """What one function of a project holds now, and the floor it is promised."""

    held: int
    floor: int


def grant(limit: int | None, want: int, others: Iterable[Share]) -> int:
    """Replicas a function asking for ``want`` may run, beside ``others`` of its project, under ``limit``."""
    if limit is None:
        return want
    reserved = sum(max(s.held, s.floor) for s in others)
    return max(0, min(want, limit - reserved))


def floors_over(project: str, limit: int | None, floors: Mapping[str, int]) -> str | None:
    """Kawa's words when the floors of ``project``'s functions alone exceed its quota (None when they fit)."""
    need = sum(floors.values())
    if limit is None or need <= limit:
        return None
    asks = ", ".join(f"{name} {n}" for name, n in sorted(floors.items()) if n)
    return (
        f"project {project!r} has a quota of {limit} function replicas at once and its functions' min_scale "
        f"alone asks for {need} ({asks}); lower min_scale, or have a project admin raise it: "
        f"`kawa projects set-quota {project} --function-replicas {need}`"
    )


class ReplicaBudget:
    """The replicas each hosted function holds, per project, under that project's quota (thread-safe)."""

    def __init__(self, limits: Mapping[str, int | None], project_of: Mapping[str, str],
                 floors: Mapping[str, int]) -> None:  # fmt: skip
        self._limits = dict(limits)
        self._project_of = dict(project_of)
        self._floors = dict(floors)
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def project(self, function: str) -> str:
        return self._project_of[function]

    def claim(self, function: str, want: int) -> int:
        """Record and return what ``function`` may run now when it asks for ``want`` replicas."""
        project = self._project_of[function]
        with self._lock:
            others = [Share(self._held.get(f, 0), self._floors.get(f, 0))
                      for f, p in self._project_of.items() if p == project and f != function]  # fmt: skip
            granted = grant(self._limits.get(project), want, others)
            self._held[function] = granted
            return granted

    def held(self, project: str) -> int:
        """The replicas ``project``'s functions hold now (as granted)."""
        with self._lock:
            return sum(n for f, n in self._held.items() if self._project_of[f] == project)
