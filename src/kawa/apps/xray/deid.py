"""The de-identification route: every upload → ``xray-images-anonymized``, with no patient data left.

::

    topic xray-images ─▶ fetch ─▶ choice: DICOM? ─▶ dicom-deidentify (PS3.15 basic profile)
                      ─▶ pixel-redact (the burned-in text box, black) ─▶ bucket xray-images-anonymized
                      failures ─▶ topic xray-deid.dlq

The anonymized object keeps its key (keys carry no patient data here); DICOM stays DICOM with a de-identified
header, PNG/JPEG are re-encoded with the box blacked out. The DICOM test is on the content (the ``DICM``
magic), not the name or content type, which can lie: a DICOM without it is rejected by ``pixel-redact``
(dead-lettered), never passed through.

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
            {"choice": {"when": [
                {"if": "body[128:132] == b'DICM'", "steps": [{"dicom-deidentify": {"profile": "basic"}}]},
            ]}},
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
    """The route running in a thread of this process, on ``platform``'s log and store."""

    def __init__(self, spec: RouteSpec, platform: Platform) -> None:
        from kawa.routes.runner import RouteRunner

        self.runner = RouteRunner(platform.config, platform)
        self.worker = self.runner.add(spec)

    @property
    def stats(self) -> Any:
        return self.worker.stats

    def stop(self) -> None:
        self.runner.stop()
