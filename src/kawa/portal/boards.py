"""Boards and their panels: what each panel shows, and who may see it.

A board (an app's board, the overview graph) is a set of :class:`Panel`s. Each panel names the JSON keys it
fills and the endpoint that owns its data, and takes that endpoint's action from the one permission map
(:mod:`kawa.portal.permissions`). A board built for a principal holds only the panels their role may see —
the JSON API, the page and the live stream all build it here, so a panel cannot be shown where its
endpoint would answer 403. ``tests/portal/test_boards.py`` checks every panel against its endpoint's
declared action, for every role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from kawa.portal.permissions import Action, allowed

if TYPE_CHECKING:
    from kawa.portal.permissions import Role

C = TypeVar("C")


@dataclass(frozen=True)
class Panel(Generic[C]):
    name: str
    keys: tuple[str, ...]  # the keys of the board's JSON that this panel fills, and only it
    action: Action  # the action of the endpoint that owns the panel's data
    source: tuple[str, str]  # that endpoint: (method, path template), as in the OpenAPI document
    build: Callable[[C], dict[str, Any]]


@dataclass(frozen=True)
class Board(Generic[C]):
    """Panels over one context ``C`` (the data every panel reads, taken once per build)."""

    name: str
    panels: tuple[Panel[C], ...]

    def visible(self, role: Role) -> tuple[Panel[C], ...]:
        return tuple(p for p in self.panels if allowed(role, p.action))

    def build(self, role: Role, context: C, **meta: Any) -> dict[str, Any]:
        """``meta`` (always shown) plus the panels ``role`` may see; ``panels`` lists their names."""
        out: dict[str, Any] = dict(meta)
        shown = []
        for panel in self.visible(role):
            part = panel.build(context)
            if set(part) != set(panel.keys):
                raise RuntimeError(f"panel {panel.name!r} built {sorted(part)}, declared {list(panel.keys)}")
            out.update(part)
            shown.append(panel.name)
        out["panels"] = shown
        return out

    def keys(self) -> set[str]:
        return {key for panel in self.panels for key in panel.keys}
