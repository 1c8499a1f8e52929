"""The FHIR webhook: ``POST <http_path>`` with an Observation or a Bundle (``application/fhir+json``) onto the
observations topic, as a Kawa route (``http:`` source → ``topic:`` sink).

Declared only when ``apps.sepsis.http_port`` is set. The reply (``202``) comes once the message is on the
topic; a body that is not JSON is refused with ``400`` and dead-lettered with the reason. The ingest function
does the FHIR checks, so a webhook and a topic producer get the same treatment. The route server has no
authentication: bind it to localhost (the default) or put an authenticating proxy in front.
"""

from __future__ import annotations

from typing import Any

from kawa.apps.sepsis.app_settings import SepsisSettings

ROUTE_ID = "sepsis-fhir"
FHIR_TYPE = "dev.kawa.fhir.observation"


def fhir_routes(s: SepsisSettings) -> list[dict[str, Any]]:
    """The webhook route, or none when ``http_port`` is not set."""
    if s.http_port is None:
        return []
    return [
        {
            "id": ROUTE_ID,
            "from": {"uri": f"http:{s.http_path}", "host": s.http_host, "port": s.http_port},
            "to": {"uri": f"topic:{s.observations_topic}", "type": FHIR_TYPE},
            "errors": {"dead-letter": f"topic:{s.dead_letter_topic}", "max-redeliveries": 2},
        }
    ]
