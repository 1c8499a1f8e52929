"""DICOM in and out: write a generated radiograph as a CR/DX file with its (fake) patient in the header,
and read any single-frame grayscale DICOM into normalized pixels."""

from __future__ import annotations

import io
import zlib
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from pydicom.uid import UID

    from kawa.apps.xray.synth import FloatImage, Radiograph

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
_ROOT = "1.2.826.0.1.3680043.10.1357."  # an example UID root for generated files


def _uid(seed: int, what: str) -> UID:
    from pydicom.uid import UID

    return UID(f"{_ROOT}{zlib.crc32(what.encode()) % 1000}.{seed}")


def radiograph_dicom(image: Radiograph, modality: Literal["CR", "DX"] = "CR") -> bytes:
    """A Part-10 DICOM file: 12-bit MONOCHROME2 pixels (text burned in) and the patient in the header."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    p = image.patient
    sop_class = UID(CR_STORAGE if modality == "CR" else DX_STORAGE)
    sop_uid = _uid(image.uid_seed, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID = _uid(image.uid_seed, "study")
    ds.SeriesInstanceUID = _uid(image.uid_seed, "series")
    ds.Modality = modality
    ds.PatientName = p.dicom_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date.strftime("%Y%m%d")
    ds.PatientSex = p.sex
    study = p.study_date.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AccessionNumber = f"A{p.patient_id[2:]}"
    ds.StudyID = "1"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.InstitutionName = "Kawa Synthetic General Hospital"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.OperatorsName = "SYNTHETIC^OPERATOR"
    ds.StudyDescription = "CHEST PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientComments = f"Synthetic patient {p.given_name} {p.family_name}"
    ds.BurnedInAnnotation = "YES"
    rows, cols = image.pixels.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = np.round(image.pixels * 4095).astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


class DicomDecodeError(ValueError):
    """A DICOM file Kawa cannot turn into pixels; the message is Kawa's own words, never header text."""


def read_dicom(data: bytes) -> FloatImage:
    """Pixels of a single-frame grayscale DICOM in [0, 1], 1 = dense (MONOCHROME1 inverted).

    Raises :class:`DicomDecodeError` with a reason that never quotes the file (its header holds PHI).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not is_dicom(data))
    except Exception as exc:  # pydicom raises many types for damaged headers
        raise DicomDecodeError(f"DICOM header cannot be parsed ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        raise DicomDecodeError("DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # truncated data, unsupported transfer syntax, missing decoder plug-in ...
        raise DicomDecodeError(f"DICOM pixel data cannot be decoded ({type(exc).__name__})") from None
    if arr.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1:
        arr = arr[0]  # multi-frame: the first frame
    elif arr.ndim == 3:
        arr = arr.mean(axis=-1)
    if arr.ndim != 2:
        raise DicomDecodeError(f"DICOM pixel data has {arr.ndim} dimensions; expected a 2-D grayscale image")
    pixels = arr.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    bits = int(getattr(ds, "BitsStored", 0) or 0)
    if 0 < bits <= 16 and not int(getattr(ds, "PixelRepresentation", 0) or 0) and slope == 1 and intercept == 0:
        pixels /= float((1 << bits) - 1)
    else:
        lo, hi = float(pixels.min()), float(pixels.max())
        pixels = (pixels - lo) / (hi - lo if hi > lo else 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
        pixels = 1.0 - pixels
    return np.clip(pixels, 0.0, 1.0).astype(np.float32)
