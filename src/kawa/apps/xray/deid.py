"""The de-identification route: every upload → ``xray-images-anonymized``, with no patient data left.

::

    topic xray-images ─▶ fetch ─▶ choice: DICOM? ─▶ dicom-deidentify (PS3.15 basic profile)
                      ─▶ pixel-redact (detected burned-in text, black) ─▶ bucket xray-images-anonymized
                      failures ─▶ topic xray-deid.dlq

The anonymized object keeps its key (keys carry no patient data here); DICOM stays DICOM with a de-identified
header, PNG/JPEG are re-encoded with the detected text blacked out (an image without text is stored as it
came). A DICOM declaring ``BurnedInAnnotation: YES`` where no text is found is dead-lettered, not stored.
The DICOM test is on the content (the ``DICM`` magic), not the name or content type, which can lie: a DICOM
without it is rejected by ``pixel-redact`` (dead-lettered), never passed through.

The same route as YAML, for ``kawa routes apply``, is :func:`deid_route_yaml`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from kawa.apps.xray.settings import XraySettings

if TYPE_CHECKING:
    from kawa.platform import Platform
    from kawa.routes import RouteSpec

ROUTE_ID = "xray-deidentify"


def deid_route_dict(settings: XraySettings) -> dict[str, Any]:
    """The route definition as plain data (what a routes YAML file holds)."""
    s = settings
    return {
        "id": ROUTE_ID,
        "from": f"topic:{s.images_topic}?group=xray-deid",
        "steps": [
            {"fetch": {"bucket": s.incoming_bucket}},  # never the outputs, should they notify this topic
            {
                "choice": {
                    "when": [
                        {"if": "body[128:132] == b'DICM'", "steps": [{"dicom-deidentify": {"profile": "basic"}}]},
                    ]
                }
            },
            {"pixel-redact": {"detect": "text", "mode": "black", "margin-px": s.redact_margin_px}},
        ],
        "to": f"bucket:{s.anonymized_bucket}",
        "errors": {"dead-letter": f"topic:{s.deid_dead_letter_topic}", "max-redeliveries": 3},
    }


def deid_route_yaml(settings: XraySettings) -> str:
    return yaml.safe_dump({"routes": [deid_route_dict(settings)]}, sort_keys=False)


class DeidRoute:
    """The route for ``settings``, ready to run on a platform.

    A route handles its messages one at a time; ``settings.route_workers`` copies (ids ``xray-deidentify``,
    ``xray-deidentify-2`` …) share the consumer group ``xray-deid``, so the topic's partitions are divided
    among them and images are de-identified in parallel. Delivery stays at-least-once: around a rebalance
    (workers joining) an image can be handled twice — its anonymized object is simply written again, but a
    damaged upload is then dead-lettered twice.
    """

    def __init__(self, settings: XraySettings) -> None:
        self.settings = settings

    def specs(self) -> list[RouteSpec]:
        from kawa.routes import parse

        base = deid_route_dict(self.settings)
        out = []
        for n in range(1, self.settings.route_workers + 1):
            data = {**base, "id": ROUTE_ID if n == 1 else f"{ROUTE_ID}-{n}"}
            out.append(parse(data, origin="kawa.apps.xray.deid"))
        return out

    def start(self, platform: Platform) -> RunningRoute:
        return RunningRoute(self.specs(), platform)


def deid_route(settings: XraySettings) -> DeidRoute:
    return DeidRoute(settings)


def deid_routes(settings: XraySettings) -> list[RouteSpec]:
    """The route's copies for ``settings`` (what the X-ray plugin declares as its routes)."""
    return DeidRoute(settings).specs()


class RunningRoute:
    """The route's workers running as threads of this process, on ``platform``'s log and store."""

    def __init__(self, specs: list[RouteSpec], platform: Platform) -> None:
        from kawa.routes import run

        self.runner = run(specs, platform.backends)
        self.workers = list(self.runner.workers.values())

    def dead_lettered(self) -> int:
        return sum(w.stats.dead_lettered for w in self.workers)

    def stop(self) -> None:
        self.runner.stop()


if __name__ == "__main__":  # python -m kawa.apps.xray.deid [xray.yaml] > routes.yaml; kawa routes apply routes.yaml
    import sys

    from kawa.apps.xray.settings import load_settings

    print(deid_route_yaml(load_settings(sys.argv[1] if len(sys.argv) > 1 else None)), end="")
