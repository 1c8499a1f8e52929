"""The route registry: route definitions stored under the Kawa home, one YAML file per route.

``kawa routes apply FILE`` validates and stores routes here; ``kawa routes delete ID`` removes one; the
route service inside ``kawa up`` watches the directory and starts, restarts or stops exactly the routes
whose definition changed. Writes are atomic (temp file + rename), so a watcher never reads half a route.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from kawa.errors import InvalidRoute, RouteNotFound
from kawa.routes.spec import ROUTE_ID, RouteSpec, load_routes


class RouteRegistry:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_home(cls, home: Path) -> RouteRegistry:
        return cls(home / "routes" / "registry")

    def _path(self, route_id: str) -> Path:
        if not ROUTE_ID.match(route_id):
            raise RouteNotFound(f"{route_id!r} is not a route id")
        return self.directory / f"{route_id}.yaml"

    def apply(self, specs: list[RouteSpec]) -> list[tuple[str, str]]:
        """Store ``specs``; returns ``(id, 'created'|'replaced'|'unchanged')`` per route."""
        self.directory.mkdir(parents=True, exist_ok=True)
        results = []
        for spec in specs:
            text = yaml.safe_dump({"routes": [spec.to_dict()]}, sort_keys=False)
            path = self._path(spec.id)
            old = path.read_text() if path.exists() else None
            if old == text:
                results.append((spec.id, "unchanged"))
                continue
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
            results.append((spec.id, "created" if old is None else "replaced"))
        return results

    def delete(self, route_id: str) -> None:
        path = self._path(route_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise RouteNotFound(
                f"no route {route_id!r} is registered; `kawa routes list` shows the registered ones"
            ) from None

    def get(self, route_id: str) -> RouteSpec:
        path = self._path(route_id)
        if not path.exists():
            raise RouteNotFound(
                f"no route {route_id!r} is registered; `kawa routes list` shows them, `kawa routes apply` adds one"
            )
        specs = load_routes(path.read_text(), str(path))
        if len(specs) != 1 or specs[0].id != route_id:
            raise InvalidRoute(f"{path} must hold exactly the route {route_id!r}")
        return specs[0]

    def snapshot(self) -> dict[str, tuple[str, RouteSpec | None, str | None]]:
        """Every stored route: ``id -> (digest, spec or None, error or None)``. A file that no longer
        parses reports its error instead of stopping the others."""
        out: dict[str, tuple[str, RouteSpec | None, str | None]] = {}
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*.yaml")):
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            digest = hashlib.sha256(text.encode()).hexdigest()
            try:
                specs = load_routes(text, str(path))
                out[path.stem] = (digest, specs[0] if specs else None, None if specs else "empty file")
            except InvalidRoute as exc:
                out[path.stem] = (digest, None, str(exc))
        return out

    def list(self) -> list[RouteSpec]:
        return [spec for _, spec, _ in self.snapshot().values() if spec is not None]
