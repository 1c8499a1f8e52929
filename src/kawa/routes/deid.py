"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile, with keyed
pseudonyms and date shifts.

:func:`deidentify_dataset` applies, at every nesting level (sequences included):

- **Table E.1-1** (:mod:`kawa.routes.deid_table`): ``X`` removed, ``Z`` emptied, ``D`` dummy values, ``U`` UIDs
  remapped; the IOD-dependent codes resolved conservatively (``X/Z`` and ``X/Z/D`` → empty, ``X/D`` →
  dummy, ``X/Z/U*`` → kept with its UIDs remapped and contents cleaned).
- **Private tags, curves (50xx) and overlays (60xx)**: removed.
- **Safety nets** for attributes the table does not list: every person name (PN) emptied, every free text
  (LT, ST, UT) removed, every UID that is not a DICOM-defined one (``1.2.840.10008.*``: SOP classes,
  transfer syntaxes) remapped.
- **Dates** (DA, DT) shifted by a per-patient number of days (1 to 3650 back, from a keyed hash of the
  Patient ID), so intervals within one patient survive: the *Retain Longitudinal Temporal Information with
  Modified Dates* option (code 113107). Times of day are kept. Patient's Birth Date is emptied.
- **Pseudonyms**: Patient ID and Patient's Name become ``HMAC(key, patient id)`` (16 hex digits), UIDs
  ``2.25.<HMAC(key, uid)>`` — the same key maps one patient, study or series to the same values in every
  file, so studies stay linkable without revealing anything.
- **Kept**: pixel data and every clinical attribute the table does not list (modality, body part, view,
  pixel spacing, exposure…); with ``retain_patient_characteristics`` also age, sex, size and weight
  (option 113108).
- **Recorded**: Patient Identity Removed = ``YES``, De-identification Method, De-identification Method Code
  Sequence (113100 and the options used), Longitudinal Temporal Information Modified = ``MODIFIED``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from kawa.routes.deid_table import BASIC_PROFILE, PATIENT_CHARACTERISTICS
from kawa.routes.keys import as_key

_DICOM_ROOT = "1.2.840.10008."
_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020
_BIRTH_DATE = 0x00100030
_FREE_TEXT = frozenset({"LT", "ST", "UT"})
_DUMMY_TEXT = "ANONYMIZED"
_METHOD = "PS3.15 E.1 Basic Profile"
_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "patient": ("113108", "Retain Patient Characteristics Option"),
}


@dataclass
class DeidReport:
    """What :func:`deidentify_dataset` did."""

    removed: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    uids_remapped: int = 0
    dates_shifted: int = 0
    private_removed: int = 0
    date_shift_days: int = 0
    patient_pseudonym: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "removed": len(self.removed), "emptied": len(self.emptied), "replaced": len(self.replaced),
            "uids_remapped": self.uids_remapped, "dates_shifted": self.dates_shifted,
            "private_removed": self.private_removed, "date_shift_days": self.date_shift_days,
        }  # fmt: skip


@lru_cache(maxsize=1)
def _actions() -> dict[int, str]:
    from pydicom.datadict import tag_for_keyword

    table: dict[int, str] = {}
    for action, names in BASIC_PROFILE.items():
        for name in names:
            tag = tag_for_keyword(name)
            table[int(tag) if tag is not None else int(name, 16)] = action
    return table


@lru_cache(maxsize=1)
def _characteristics() -> frozenset[int]:
    from pydicom.datadict import tag_for_keyword

    return frozenset(int(t) for t in (tag_for_keyword(n) for n in PATIENT_CHARACTERISTICS) if t is not None)


def keyed_uid(uid: str, key: bytes) -> str:
    """``2.25.<decimal of 128 bits of HMAC-SHA256(key, uid)>`` — a valid UID, stable for one key."""
    digest = hmac.new(key, b"uid:" + uid.strip().encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def pseudonym(patient: str, key: bytes) -> str:
    return hmac.new(key, b"patient:" + patient.strip().encode(), hashlib.sha256).hexdigest()[:16].upper()


def date_shift_days(patient: str, key: bytes) -> int:
    digest = hmac.new(key, b"dateshift:" + patient.strip().encode(), hashlib.sha256).digest()
    return -(1 + int.from_bytes(digest[:4], "big") % 3650)


def _shift_date(value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    try:
        shifted = date(int(text[:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
    except ValueError:
        return ""
    return shifted.strftime("%Y%m%d") + text[8:]


class _Walker:
    def __init__(self, key: bytes, days: int, patient_pseudonym: str, keep: frozenset[int]) -> None:
        self.key = key
        self.days = days
        self.patient = patient_pseudonym
        self.keep = keep
        self.report = DeidReport(date_shift_days=days, patient_pseudonym=patient_pseudonym)
        self.actions = _actions()

    def _uid(self, value: Any) -> Any:
        def one(uid: Any) -> str:
            text = str(uid)
            if not text or text.startswith(_DICOM_ROOT):
                return text
            self.report.uids_remapped += 1
            return keyed_uid(text, self.key)

        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [one(v) for v in value]
        return one(value) if value else value

    def _dates(self, value: Any) -> Any:
        self.report.dates_shifted += 1
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return [_shift_date(str(v), self.days) for v in value]
        return _shift_date(str(value), self.days) if value else value

    @staticmethod
    def _dummy(vr: str) -> Any:
        if vr in ("DS", "IS"):
            return "0"
        if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            return 0
        if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            return b"\x00\x00"
        if vr == "DA":
            return "19000101"
        if vr == "DT":
            return "19000101000000"
        if vr == "TM":
            return "000000"
        if vr == "AS":
            return "000D"
        if vr == "UR":
            return ""
        return _DUMMY_TEXT

    def walk(self, ds: Any) -> None:
        from pydicom.sequence import Sequence

        for tag in list(ds.keys()):
            elem = ds[tag]
            name = elem.keyword or str(tag)
            group, number = tag >> 16, tag & 0xFFFF
            if tag.is_private or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
                del ds[tag]
                if tag.is_private:
                    self.report.private_removed += 1
                else:
                    self.report.removed.append(name)
                continue
            if group == 0x0002 or number == 0x0000:  # file meta (handled apart) and group lengths
                continue
            vr = elem.VR
            action = None if int(tag) in self.keep else self.actions.get(int(tag))
            if int(tag) == _PATIENT_NAME:
                elem.value = f"ANON^{self.patient}"
                self.report.replaced.append(name)
                continue
            if int(tag) == _PATIENT_ID:
                elem.value = self.patient
                self.report.replaced.append(name)
                continue
            if int(tag) == _BIRTH_DATE:
                elem.value = ""
                self.report.emptied.append(name)
                continue
            if action == "X":
                del ds[tag]
                self.report.removed.append(name)
                continue
            if vr == "SQ":
                if action in (None, "X/Z/U*"):
                    for item in elem.value:
                        self.walk(item)
                else:  # Z, D, X/Z, X/D, X/Z/D: the sequence may hold identifying items; keep it empty
                    elem.value = Sequence([])
                    self.report.emptied.append(name)
                continue
            if vr == "UI":
                if action is not None or elem.value:
                    elem.value = self._uid(elem.value)
                continue
            if vr in ("DA", "DT"):
                elem.value = self._dates(elem.value)
                continue
            if vr == "TM":
                continue  # times of day are kept under the modified-dates option
            if action is None:
                if vr == "PN":
                    elem.value = ""
                    self.report.emptied.append(name)
                elif vr in _FREE_TEXT or vr == "UN":  # free text, or a value nobody can read safely
                    del ds[tag]
                    self.report.removed.append(name)
                continue
            if action in ("D", "X/D"):
                elem.value = self._dummy(vr)
                self.report.replaced.append(name)
            else:  # Z, Z/D, X/Z, X/Z/D
                elem.value = "" if vr not in ("US", "SS", "UL", "SL", "FL", "FD") else None
                self.report.emptied.append(name)


def deidentify_dataset(
    ds: Any,
    *,
    key: bytes | str,
    profile: str = "basic",
    retain_patient_characteristics: bool = False,
) -> tuple[Any, DeidReport]:
    """De-identify a pydicom ``Dataset`` in place (see the module docstring) and return it with a report.

    ``key`` (at least 16 bytes) drives pseudonyms, UID remapping and the date shift: use one secret for
    every file whose patients and studies must stay linkable.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    if profile != "basic":
        raise ValueError(f"unknown de-identification profile {profile!r}; Kawa implements 'basic'")
    raw_key = as_key(key)
    patient = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
    days = date_shift_days(patient, raw_key)
    keep = _characteristics() if retain_patient_characteristics else frozenset()
    walker = _Walker(raw_key, days, pseudonym(patient, raw_key), keep)
    walker.walk(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in list(meta.keys()):
            if int(tag) in (0x00020016, 0x00020017, 0x00020018):  # source/sending/receiving AE titles
                del meta[tag]
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    codes = [_CODES["basic"], _CODES["dates"]] + ([_CODES["patient"]] if retain_patient_characteristics else [])
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [_METHOD, "Kawa keyed pseudonyms, UIDs and date shift"]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    return ds, walker.report
