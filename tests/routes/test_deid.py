"""DICOM de-identification: the real RG1 chest image and generated files with planted PHI everywhere."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kawa.routes.deid import deidentify_dataset, keyed_uid
from kawa.routes.message import dicom_bytes

KEY = b"test-key-0123456789abcdef"

PLANTED = {
    "PatientName": "Doe^Johnathan",
    "PatientID": "MRN-4471-XQ",
    "OtherPatientIDs": "ALT-99812",
    "PatientAddress": "42 Baker Street Springfield",
    "PatientTelephoneNumbers": "555-867-5309",
    "InstitutionName": "St Elsewhere General",
    "InstitutionAddress": "1 Hospital Road Gotham",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Quinn^Michaela",
    "OperatorsName": "Operator^Olga",
    "AccessionNumber": "ACC-77120",
    "StudyID": "STUDY-5521",
    "StudyDescription": "Chest for Johnathan Doe",
    "ImageComments": "patient Johnathan called back",
    "PatientComments": "allergic, lives alone",
    "StationName": "WARD7-CR",
    "DeviceSerialNumber": "SN-99-0042",
    "PatientBirthDate": "19610412",
    "StudyDate": "20230314",
    "SeriesDate": "20230315",
    "AcquisitionDateTime": "20230314101112",
}


def _planted(study_uid: str, sop_uid: str) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.PatientSex, ds.PatientAge = "F", "062Y"
    nested = Dataset()
    nested.PatientName = "Nested^Person"
    nested.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.8.9.123"
    nested.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    nested.add_new(0x00091010, "LO", "PrivateNestedSecret")
    ds.ReferencedImageSequence = Sequence([nested])
    ds.add_new(0x00290010, "LO", "ACME PRIVATE")
    ds.add_new(0x00291001, "LO", "PrivateSecretValue")
    ds.add_new(0x00291002, "UN", b"RawPrivateBytes!")
    ds.add_new(0x00391001, "SH", "OtherPrivate")
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 8)  # overlay data
    ds.add_new(0x00204000 + 0, "LT", "unlisted free text Johnathan")  # ImageComments again via tag
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.SourceApplicationEntityTitle = "ST_ELSEWHERE"
    return ds


def _walk(ds: Any) -> list[Any]:
    """Every element of ``ds`` at every level (sequences, file meta)."""
    out = []
    for elem in ds:
        out.append(elem)
        if elem.VR == "SQ":
            for item in elem.value:
                out.extend(_walk(item))
    if getattr(ds, "file_meta", None) is not None:
        out.extend(ds.file_meta)
    return out


def _assert_nothing_survives(ds: Any, raw: bytes, secrets: list[str]) -> None:
    texts = []
    for elem in _walk(ds):
        assert not elem.tag.is_private, f"private tag {elem.tag} survived"
        value = elem.value
        if isinstance(value, bytes):
            texts.append(value.decode("latin-1"))
        elif elem.VR != "SQ":
            texts.append(str(value))
    joined = "\n".join(texts)
    for secret in secrets:
        assert secret not in joined, f"{secret!r} survived in an element"
        assert secret.encode() not in raw, f"{secret!r} survived in the file's bytes"


def test_planted_phi_never_survives() -> None:
    from pydicom import dcmread

    study = "1.2.826.0.1.3680043.8.498.111"
    ds = _planted(study, study + ".1.1")
    secrets = [
        *PLANTED.values(),
        "Johnathan",
        "Nested^Person",
        "PrivateNestedSecret",
        "PrivateSecretValue",
        "RawPrivateBytes",
        "OtherPrivate",
        "ST_ELSEWHERE",
        study,
        "1.2.3.4.5.6.7.8.9.123",
    ]
    out, report = deidentify_dataset(ds, key=KEY)
    raw = dicom_bytes(out)
    reread = dcmread(io.BytesIO(raw))
    _assert_nothing_survives(reread, raw, secrets)
    assert reread.PatientIdentityRemoved == "YES"
    assert reread.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert "113107" in {item.CodeValue for item in reread.DeidentificationMethodCodeSequence}
    assert reread.LongitudinalTemporalInformationModified == "MODIFIED"
    # Clinical attributes and class UIDs stay; dates move together.
    assert (reread.Modality, reread.BodyPartExamined, reread.ViewPosition) == ("CR", "CHEST", "PA")
    assert reread.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
    assert reread.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
    from datetime import date

    study_date = date.fromisoformat(f"{reread.StudyDate[:4]}-{reread.StudyDate[4:6]}-{reread.StudyDate[6:]}")
    series_date = date.fromisoformat(f"{reread.SeriesDate[:4]}-{reread.SeriesDate[4:6]}-{reread.SeriesDate[6:]}")
    assert (series_date - study_date).days == 1
    assert (study_date - date(2023, 3, 14)).days == report.date_shift_days < 0
    assert reread.PatientBirthDate == ""
    assert report.private_removed >= 4
    assert np.array_equal(reread.pixel_array, np.arange(64, dtype=np.uint16).reshape(8, 8))


def test_uids_stay_linked_across_files_of_one_study() -> None:
    study = "1.2.826.0.1.3680043.8.498.222"
    first, _ = deidentify_dataset(_planted(study, study + ".1.1"), key=KEY)
    second, _ = deidentify_dataset(_planted(study, study + ".1.2"), key=KEY)
    assert first.StudyInstanceUID == second.StudyInstanceUID == keyed_uid(study, KEY)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.PatientID == second.PatientID and first.StudyDate == second.StudyDate
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    other, _ = deidentify_dataset(_planted(study, study + ".1.1"), key=b"another-key-0123456789")
    assert other.StudyInstanceUID != first.StudyInstanceUID  # without the key nothing links


def test_real_rg1_chest_image() -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCI.dcm")
    assert path is not None
    original = dcmread(path)
    pixels = original.pixel_array.copy()
    secrets = [
        "CompressedSamples",
        "9RG1",
        "26210",
        "Philips Medical Systems Hamburg",
        "Our Department",
        "THORAVISION",
        "exam Number",
        "19400305",
        "gdcmconv",
        "92.00.003",
        str(original.StudyInstanceUID),
        str(original.SOPInstanceUID),
        str(original.SeriesInstanceUID),
    ]
    out, _ = deidentify_dataset(dcmread(path), key=KEY)
    raw = dicom_bytes(out)
    reread = dcmread(io.BytesIO(raw))
    _assert_nothing_survives(reread, raw, secrets)
    assert np.array_equal(reread.pixel_array, pixels)
    assert reread.Modality == "CR" and reread.BodyPartExamined == "CHEST"


_text = st.text(alphabet=st.characters(min_codepoint=65, max_codepoint=90), min_size=10, max_size=16)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_text, mrn=_text, institution=_text, private=_text)
def test_property_planted_values_never_survive(name: str, mrn: str, institution: str, private: str) -> None:
    ds = _planted("1.2.826.0.1.3680043.8.498.333", "1.2.826.0.1.3680043.8.498.333.1")
    ds.PatientName, ds.PatientID, ds.InstitutionName = name, mrn, institution
    ds.add_new(0x00431001, "LO", private)
    out, _ = deidentify_dataset(ds, key=KEY)
    raw = dicom_bytes(out)
    for secret in (name, mrn, institution, private):
        assert secret.encode() not in raw


def test_dicom_deidentify_step_rejects_garbage(tmp_path: Path) -> None:
    from kawa.backends import open_backends
    from kawa.config import load_config
    from kawa.errors import MessageRejected
    from kawa.routes.components.base import RouteContext
    from kawa.routes.message import Message
    from kawa.routes.processors.imaging import DicomDeidentify
    from kawa.routes.progress import ProgressStore

    config = load_config(home=str(tmp_path))
    ctx = RouteContext("d", config, ProgressStore(":memory:"), open_backends(config))
    step = DicomDeidentify({"rename": True}, ctx)
    with pytest.raises(MessageRejected, match="not a readable DICOM"):
        step.process(Message(body=b"definitely not dicom", id="x", source="s"))
    out = step.process(Message(body=dicom_bytes(_planted("1.2.3.44", "1.2.3.44.1")), id="y", source="s"))[0]
    assert out.headers["key"].startswith("2.25.") and out.headers["key"].endswith(".dcm")
    assert (tmp_path / "routes" / "keys" / "default.key").stat().st_mode & 0o777 == 0o600
