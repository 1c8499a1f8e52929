"""The wire format: HL7 FHIR R4 ``Observation`` resources with LOINC codes, singly or in a ``Bundle``.

- :func:`encode` / :func:`encode_bundle` turn simulator rows into resources (plain dicts, ready for
  ``json.dumps``); :func:`decode` / :func:`decode_bundle` turn resources back into rows — exactly: values are
  recorded at their chart resolution and times on whole seconds, so a round trip returns the same floats.
- :func:`decode` checks what the app needs on its own (no FHIR library): resource type, status, a known
  LOINC code, a numeric value in the expected unit, a subject and an effective time. A bad resource raises
  :class:`InvalidObservation`, whose reason never contains the subject or any value — it can go to a
  dead-letter topic and into logs as it is.
- :func:`validate` checks a resource against the FHIR R4 model of ``fhir.resources`` (its ``R4B`` package,
  which has R4's Observation and Bundle), imported only when called.

Subjects are ``Patient/<id>``; the default ids (``sim-<number>``) are the simulator's — a deployment passes
its own ``subject`` and ``resolve`` (e.g. a pseudonymisation table).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kawa.apps.sepsis.codes import ACVPU_LETTERS, BY_LOINC, CODINGS, Code
from kawa.apps.sepsis.sim import Observation
from kawa.errors import EventError, KawaError

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACVPU_SYSTEM = "https://kawa.dev/fhir/CodeSystem/acvpu"
EPOCH = datetime(2026, 12, 1, tzinfo=UTC)
"""The instant of simulation time 0 (hours count from here)."""
_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})


class InvalidObservation(EventError):
    """A resource is not an Observation this app can use; the message says why (never which patient)."""


class FhirLibraryMissing(KawaError):
    """``fhir.resources`` is needed for :func:`validate` and is not installed."""


def default_subject(patient: int) -> str:
    return f"Patient/sim-{patient}"


def default_resolve(reference: str) -> int:
    """The patient number of a ``Patient/sim-<n>`` reference (raises ValueError otherwise)."""
    kind, _, ident = reference.partition("/")
    if kind != "Patient" or not ident.startswith("sim-"):
        raise ValueError("not a simulator patient reference")
    return int(ident[4:])


@functools.lru_cache(maxsize=4096)
def _iso(time_h: float, epoch: datetime) -> str:
    seconds = round(time_h * 3600.0)
    return (epoch + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=4096)  # a Bundle's observations share a few times
def _hours(text: str, epoch: datetime) -> float:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("no time zone")
    seconds = (t - epoch) / timedelta(seconds=1)
    return round(seconds) / 3600.0


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def encode(
    obs: Observation, *, subject: Callable[[int], str] = default_subject, epoch: datetime = EPOCH
) -> dict[str, Any]:
    """One FHIR R4 Observation for a simulator row. Its ``id`` is a hash of the row (no identifier in it)."""
    code = Code(obs.code)
    c = CODINGS[code]
    ref = subject(obs.patient)
    when = _iso(obs.time_h, epoch)
    rid = hashlib.blake2b(f"{ref}|{when}|{c.loinc}".encode(), digest_size=10).hexdigest()
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": c.category}]}],
        "code": {"coding": [{"system": LOINC, "code": c.loinc, "display": c.display}]},
        "subject": {"reference": ref},
        "effectiveDateTime": when,
    }
    if code is Code.ACVPU:
        letter = ACVPU_LETTERS[int(obs.value)]
        res["valueCodeableConcept"] = {"coding": [{"system": ACVPU_SYSTEM, "code": letter}]}
    else:
        res["valueQuantity"] = {"value": _number(obs.value), "unit": c.unit, "system": UCUM, "code": c.ucum}
    return res


def encode_bundle(
    rows: Iterable[Observation], *, subject: Callable[[int], str] = default_subject, epoch: datetime = EPOCH
) -> dict[str, Any]:
    """A ``collection`` Bundle of :func:`encode` resources."""
    entries = []
    for o in rows:
        r = encode(o, subject=subject, epoch=epoch)
        entries.append({"fullUrl": f"urn:uuid:{_uuid(r['id'])}", "resource": r})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _uuid(hex20: str) -> str:
    h = (hex20 + "0" * 32)[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _reject(reason: str) -> InvalidObservation:
    return InvalidObservation(f"{reason}; send a FHIR R4 Observation with a LOINC code the sepsis app knows, "
                              "a numeric valueQuantity, a Patient subject and an effectiveDateTime")


def decode(
    res: Any, *, resolve: Callable[[str], int] = default_resolve, epoch: datetime = EPOCH
) -> Observation:
    """The simulator row of an Observation resource, or :class:`InvalidObservation` with the reason."""
    if not isinstance(res, Mapping):
        raise _reject("not a JSON object")
    if res.get("resourceType") != "Observation":
        raise _reject("resourceType is not Observation")
    if res.get("status") not in _STATUSES:
        raise _reject("status missing or not final/amended/corrected/preliminary")
    code = _code(res.get("code"))
    value = _value(res, code)
    subject = res.get("subject")
    ref = subject.get("reference") if isinstance(subject, Mapping) else None
    if not isinstance(ref, str) or not ref:
        raise _reject("missing subject reference")
    try:
        patient = resolve(ref)
    except (ValueError, KeyError):
        raise _reject("subject reference is not a known patient") from None
    when = res.get("effectiveDateTime")
    if not isinstance(when, str) or not when:
        raise _reject("missing effectiveDateTime")
    try:
        time_h = _hours(when, epoch)
    except ValueError:
        raise _reject("effectiveDateTime is not an ISO 8601 time with a time zone") from None
    return Observation(patient, time_h, int(code), value)


def _code(concept: Any) -> Code:
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    if not isinstance(codings, list) or not codings:
        raise _reject("missing code")
    loincs = [c.get("code") for c in codings if isinstance(c, Mapping) and c.get("system") == LOINC]
    if not loincs:
        raise _reject("code has no LOINC coding")
    for lc in loincs:
        if isinstance(lc, str) and lc in BY_LOINC:
            return BY_LOINC[lc]
    shown = str(loincs[0])[:16]
    raise _reject(f"unknown LOINC code {shown!r}")


def _value(res: Mapping[str, Any], code: Code) -> float:
    if code is Code.ACVPU and "valueCodeableConcept" in res:
        concept = res["valueCodeableConcept"]
        codings = concept.get("coding") if isinstance(concept, Mapping) else None
        for c in codings if isinstance(codings, list) else []:
            if isinstance(c, Mapping) and c.get("system") == ACVPU_SYSTEM and c.get("code") in ACVPU_LETTERS:
                return float(ACVPU_LETTERS.index(c["code"]))
        raise _reject("ACVPU value is not one of A, C, V, P, U")
    q = res.get("valueQuantity")
    if not isinstance(q, Mapping) or "value" not in q:
        raise _reject(f"missing valueQuantity for LOINC {CODINGS[code].loinc}")
    v = q["value"]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _reject(f"non-numeric value for LOINC {CODINGS[code].loinc}")
    unit = q.get("code")
    if unit is not None and unit != CODINGS[code].ucum:
        raise _reject(f"unit {str(unit)[:16]!r} for LOINC {CODINGS[code].loinc}, expected {CODINGS[code].ucum!r}")
    return float(v)


def decode_bundle(
    bundle: Any, *, resolve: Callable[[str], int] = default_resolve, epoch: datetime = EPOCH
) -> tuple[list[Observation], list[tuple[int, str]]]:
    """The rows of a Bundle's Observation entries, and ``(entry index, reason)`` for each bad one."""
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise _reject("not a Bundle")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise _reject("Bundle.entry is not a list")
    good: list[Observation] = []
    bad: list[tuple[int, str]] = []
    for i, e in enumerate(entries):
        try:
            good.append(decode(e.get("resource") if isinstance(e, Mapping) else None, resolve=resolve, epoch=epoch))
        except InvalidObservation as exc:
            bad.append((i, str(exc)))
    return good, bad


def validate(res: Mapping[str, Any]) -> None:
    """Validate ``res`` (an Observation or a Bundle) against the FHIR R4 models of ``fhir.resources``.
    Raises :class:`InvalidObservation` naming the failing elements (paths and error kinds only: no values,
    so no identifiers), or :class:`FhirLibraryMissing`."""
    try:
        from fhir.resources.R4B.bundle import Bundle
        from fhir.resources.R4B.observation import Observation as FhirObservation
    except ImportError as exc:
        raise FhirLibraryMissing(
            "FHIR validation needs fhir.resources: pip install 'fhir.resources==8.3.0'"
        ) from exc
    from pydantic import ValidationError

    model = Bundle if res.get("resourceType") == "Bundle" else FhirObservation
    try:
        model.model_validate(dict(res))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(resource)'}: {err['type']}" for err in exc.errors()
        )
        raise InvalidObservation(f"not a valid FHIR R4 {model.__name__}: {problems}") from None
