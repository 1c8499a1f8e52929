"""The de-identification route: every upload → ``xray-images-anonymized``, with no patient data left.

::

    topic xray-images ─▶ fetch ─▶ dicom-deidentify (PS3.15 basic profile) ─▶ pixel-redact (burned-in box)
                      ─▶ bucket xray-images-anonymized          failures ─▶ topic xray-deid.dlq

The same route as YAML, for ``kawa routes apply``, is :func:`deid_route_yaml`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from kawa.apps.xray.settings import XraySettings

if TYPE_CHECKING:
    from kawa.platform import Platform
    from kawa.routes.spec import RouteSpec

ROUTE_ID = "xray-deidentify"


def deid_route_dict(settings: XraySettings) -> dict[str, Any]:
    """The route definition as plain data (what a routes YAML file holds)."""
    s = settings
    return {
        "id": ROUTE_ID,
        "from": f"topic:{s.images_topic}?group=xray-deid",
        "steps": [
            {"fetch": {}},
            {"dicom-deidentify": {"profile": "basic"}},
            {"pixel-redact": {"boxes": [list(s.redaction_box())], "mode": "black"}},
        ],
        "to": f"bucket:{s.anonymized_bucket}",
        "errors": {"dead-letter": f"topic:{s.deid_dead_letter_topic}", "max-redeliveries": 3},
    }


def deid_route_yaml(settings: XraySettings) -> str:
    return yaml.safe_dump({"routes": [deid_route_dict(settings)]}, sort_keys=False)


class DeidRoute:
    """The route for ``settings``, ready to run on a platform."""

    def __init__(self, settings: XraySettings) -> None:
        self.settings = settings

    @property
    def spec(self) -> RouteSpec:
        from kawa.routes.spec import parse_route

        return parse_route(deid_route_dict(self.settings), origin="kawa.apps.xray.deid")

    def start(self, platform: Platform) -> RunningRoute:
        return RunningRoute(self.spec, platform)


def deid_route(settings: XraySettings) -> DeidRoute:
    return DeidRoute(settings)


class RunningRoute:
    """One route running in a thread of this process, on ``platform``'s log and store."""

    def __init__(self, spec: RouteSpec, platform: Platform) -> None:
        from kawa.routes.components.base import RouteContext
        from kawa.routes.progress import ProgressStore
        from kawa.routes.worker import RouteWorker

        self._progress = ProgressStore(platform.config.path("routes", "progress.sqlite"))
        self.worker = RouteWorker(
            spec, RouteContext(spec.id, platform.config, self._progress, platform=platform), idle_poll_s=0.05
        )
        self.worker.start()

    @property
    def stats(self) -> Any:
        return self.worker.stats

    def stop(self) -> None:
        self.worker.stop()
        self._progress.close()
