"""FHIR R4 Observations: exact round trip, Bundles, validation with fhir.resources, and bad resources
rejected with a reason that names no patient."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kawa.apps.sepsis.codes import CODINGS, Code
from kawa.apps.sepsis.fhir import (
    InvalidObservation,
    decode,
    decode_bundle,
    encode,
    encode_bundle,
    validate,
)
from kawa.apps.sepsis.settings import SimSettings
from kawa.apps.sepsis.sim import Observation, iter_observations, simulate

SECRET = "MRN-0042-SMITH"


@pytest.fixture(scope="module")
def rows() -> list[Observation]:
    return list(iter_observations(simulate(SimSettings(patients=40, hours=6, seed=31)).observations))


def test_round_trip_through_json_is_exact(rows: list[Observation]) -> None:
    bundle = json.loads(json.dumps(encode_bundle(rows)))
    good, bad = decode_bundle(bundle)
    assert bad == [] and good == rows
    assert {r.code for r in rows} == {int(c) for c in Code}


def test_loinc_codes_and_units() -> None:
    want = {Code.HR: "8867-4", Code.RR: "9279-1", Code.TEMP: "8310-5", Code.SBP: "8480-6", Code.DBP: "8462-4",
            Code.MAP: "8478-0", Code.SPO2: "59408-5", Code.GCS: "9269-2", Code.WBC: "6690-2",
            Code.LACTATE: "2524-7", Code.CREATININE: "2160-0", Code.BILIRUBIN: "1975-2", Code.PLATELETS: "777-3"}
    for code, loinc in want.items():
        res = encode(Observation(3, 1.5, int(code), 7.0))
        assert res["code"]["coding"][0] == {"system": "http://loinc.org", "code": loinc,
                                            "display": CODINGS[code].display}
        assert res["effectiveDateTime"] == "2026-12-01T01:30:00Z"
    # the alternate codes of the issue are accepted on the way in
    alt = encode(Observation(3, 1.0, int(Code.SPO2), 95.0))
    alt["code"]["coding"][0]["code"] = "2708-6"
    assert decode(alt).code == Code.SPO2


def test_resources_and_bundle_validate_with_fhir_resources(rows: list[Observation]) -> None:
    validate(encode(rows[0]))
    validate(encode_bundle(rows[:50]))
    broken = encode(rows[0])
    del broken["code"]
    with pytest.raises(InvalidObservation, match="code: missing"):
        validate(broken)


def _res(**change: Any) -> dict[str, Any]:
    r = encode(Observation(7, 2.0, int(Code.HR), 137.0), subject=lambda n: f"Patient/{SECRET}")
    for k, v in change.items():
        if v is None:
            r.pop(k)
        else:
            r[k] = v
    return r


def _resolve(ref: str) -> int:
    if ref != f"Patient/{SECRET}":
        raise KeyError(ref)
    return 7


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (_res(code=None), "missing code"),
        (_res(code={"coding": [{"system": "http://loinc.org", "code": "0000-0"}]}), "unknown LOINC"),
        (_res(code={"coding": [{"system": "http://snomed.info/sct", "code": "364075005"}]}), "no LOINC"),
        (_res(valueQuantity={"value": "88", "code": "/min"}), "non-numeric value"),
        (_res(valueQuantity={"value": True}), "non-numeric value"),
        (_res(valueQuantity=None), "missing valueQuantity"),
        (_res(valueQuantity={"value": 88, "code": "/s"}), "unit"),
        (_res(subject=None), "missing subject"),
        (_res(subject={"reference": "Patient/someone-else"}), "not a known patient"),
        (_res(effectiveDateTime=None), "missing effectiveDateTime"),
        (_res(effectiveDateTime="yesterday"), "ISO 8601"),
        (_res(resourceType="Patient"), "resourceType"),
        (_res(status=None), "status"),
    ],
)
def test_bad_resources_are_rejected_with_a_reason_without_phi(resource: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidObservation, match=reason) as info:
        decode(resource, resolve=_resolve)
    assert SECRET not in str(info.value) and "someone-else" not in str(info.value)
    assert "137" not in str(info.value)


def test_library_reasons_carry_no_identifier() -> None:
    r = _res(valueQuantity={"value": "abc"})
    with pytest.raises(InvalidObservation) as info:
        validate(r)
    assert "valueQuantity" in str(info.value) and SECRET not in str(info.value)


def test_a_bundle_keeps_the_good_entries_and_reports_the_bad() -> None:
    good = _res()
    bad = copy.deepcopy(good)
    bad["valueQuantity"]["value"] = "high"
    obs, rejects = decode_bundle({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": good}, {"resource": bad}, {"x": 1}]}, resolve=_resolve)
    assert obs == [Observation(7, 2.0, int(Code.HR), 137.0)]
    assert [i for i, _ in rejects] == [1, 2]
    assert "non-numeric" in rejects[0][1] and SECRET not in rejects[0][1]
