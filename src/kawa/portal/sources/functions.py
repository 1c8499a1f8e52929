"""Functions as the portal sees them: the specs and live metrics of the function host running in this
process (``platform.function_hosts()``: ``kawa up``'s and each running app's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kawa.errors import FunctionNotFound, NotConfigured

if TYPE_CHECKING:
    from kawa.functions.app import FunctionSpec
    from kawa.functions.metrics import FunctionStats
    from kawa.platform import Platform

NOT_HOSTED = (
    "no function host runs in this process; start functions with `kawa up --app module:app` "
    "(the portal shows the functions of the process that serves it)"
)


@dataclass(frozen=True)
class FunctionView:
    name: str  # app.function
    spec: FunctionSpec
    stats: FunctionStats


class FunctionsSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def host(self) -> Any:
        host = self._first()
        if host is None:
            raise NotConfigured(NOT_HOSTED)
        return host

    def available(self) -> tuple[bool, str | None]:
        return (True, None) if self._first() is not None else (False, NOT_HOSTED)

    def _first(self) -> Any:
        hosts = self.platform.function_hosts()
        return hosts[0] if hosts else None

    def specs(self) -> list[FunctionSpec]:
        host = self._first()
        return list(host.specs) if host is not None else []

    def functions(self) -> list[FunctionView]:
        host = self.host()
        stats = host.metrics()
        out = []
        for spec in host.specs:
            snapshot = stats.get(spec.qualified_name)
            if snapshot is not None:
                out.append(FunctionView(spec.qualified_name, spec, snapshot))
        return sorted(out, key=lambda f: f.name)

    def function(self, name: str) -> FunctionView:
        views = self.functions()
        for view in views:
            if name in (view.name, view.spec.name):
                return view
        raise FunctionNotFound(f"no hosted function {name!r}; hosted: {', '.join(v.name for v in views) or 'none'}")
