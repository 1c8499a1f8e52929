"""The observation codes of the sepsis app: a small integer per measured quantity, its LOINC code and unit.

The simulator, the features, the scores and the FHIR wire format all speak these codes, so one table here
is the only place a LOINC code is written. ``O2_FLOW`` is supplemental oxygen in L/min (0 means room air);
``ACVPU`` is the consciousness level as an ordinal, 0 = Alert, 1 = new Confusion, 2 = Voice, 3 = Pain,
4 = Unresponsive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Code(IntEnum):
    """What an observation measured. The value is the ``code`` column of an observations table."""

    HR = 0
    RR = 1
    TEMP = 2
    SBP = 3
    DBP = 4
    MAP = 5
    SPO2 = 6
    O2_FLOW = 7
    ACVPU = 8
    GCS = 9
    WBC = 10
    LACTATE = 11
    CREATININE = 12
    BILIRUBIN = 13
    PLATELETS = 14


N_CODES = len(Code)
VITALS: tuple[Code, ...] = (
    Code.HR, Code.RR, Code.TEMP, Code.SBP, Code.DBP, Code.MAP, Code.SPO2, Code.O2_FLOW, Code.ACVPU, Code.GCS,
)
LABS: tuple[Code, ...] = (Code.WBC, Code.LACTATE, Code.CREATININE, Code.BILIRUBIN, Code.PLATELETS)

ACVPU_LETTERS = ("A", "C", "V", "P", "U")
"""ACVPU level by ordinal: Alert, new Confusion, Voice, Pain, Unresponsive."""


@dataclass(frozen=True)
class Coding:
    """How a code travels in FHIR: LOINC code and display, UCUM unit (``unit`` shown, ``ucum`` the code)."""

    loinc: str
    display: str
    unit: str
    ucum: str
    category: str  # FHIR observation-category: vital-signs | laboratory | survey
    decimals: int  # the resolution the value is recorded at


CODINGS: dict[Code, Coding] = {
    Code.HR: Coding("8867-4", "Heart rate", "beats/minute", "/min", "vital-signs", 0),
    Code.RR: Coding("9279-1", "Respiratory rate", "breaths/minute", "/min", "vital-signs", 0),
    Code.TEMP: Coding("8310-5", "Body temperature", "C", "Cel", "vital-signs", 1),
    Code.SBP: Coding("8480-6", "Systolic blood pressure", "mmHg", "mm[Hg]", "vital-signs", 0),
    Code.DBP: Coding("8462-4", "Diastolic blood pressure", "mmHg", "mm[Hg]", "vital-signs", 0),
    Code.MAP: Coding("8478-0", "Mean blood pressure", "mmHg", "mm[Hg]", "vital-signs", 0),
    Code.SPO2: Coding(
        "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%", "vital-signs", 0
    ),
    Code.O2_FLOW: Coding("3151-8", "Inhaled oxygen flow rate", "L/min", "L/min", "vital-signs", 1),
    Code.ACVPU: Coding("67775-7", "Level of responsiveness", "{score}", "{score}", "survey", 0),
    Code.GCS: Coding("9269-2", "Glasgow coma score total", "{score}", "{score}", "survey", 0),
    Code.WBC: Coding("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL",
                     "laboratory", 1),
    Code.LACTATE: Coding("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", "laboratory", 1),
    Code.CREATININE: Coding("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL",
                            "laboratory", 2),
    Code.BILIRUBIN: Coding("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL",
                           "laboratory", 1),
    Code.PLATELETS: Coding("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL",
                           "laboratory", 0),
}

ALTERNATE_LOINC: dict[str, Code] = {"2708-6": Code.SPO2, "32693-4": Code.LACTATE}
"""Other LOINC codes accepted on the way in for the same quantity (arterial SpO2, blood lactate)."""

BY_LOINC: dict[str, Code] = {c.loinc: code for code, c in CODINGS.items()} | ALTERNATE_LOINC
