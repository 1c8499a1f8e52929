"""Checks shared by the X-ray end-to-end tests: uploads with planted PHI, PHI searches, topic reads."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kawa.apps.xray.generator import Generator, Prepared, Upload
from kawa.apps.xray.imaging import box_pixels, decode
from kawa.apps.xray.results import ResultRow, ResultsDB
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.synth import RadiographGenerator
from kawa.log.base import EventLog, Record

_DATE = re.compile(r"\d{8}|\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Batch:
    images: list[Upload]  # decodable uploads
    corrupt: list[Upload]  # damaged uploads (expected on the dead-letter topics)

    @property
    def phi(self) -> set[str]:
        return {value for u in [*self.images, *self.corrupt] for value in u.phi}

    def phi_for(self, upload: Upload) -> set[str]:
        """What must not appear in ``upload``'s de-identified output: all of its own planted values, and
        every other patient's except dates. A date shifted by a random number of days can land on another
        patient's real date; that is a coincidence of the calendar, not a leak."""
        others = {v for u in [*self.images, *self.corrupt] if u is not upload for v in u.phi if not _DATE.fullmatch(v)}
        return set(upload.phi) | others


def upload_batch(generator: Generator, formats: Iterable[str], *, corrupt: bool = True) -> Batch:
    """One upload per format in ``formats`` (png, jpeg, dicom), then a junk file and a truncated DICOM
    whose intact header holds a patient."""
    images = [generator.upload(generator.prepare(fmt)) for fmt in formats]  # type: ignore[arg-type]
    damaged: list[Upload] = []
    if corrupt:
        junk = generator.prepare("png")
        damaged.append(generator.upload(Prepared(b"this is not an image", "png", junk.image, corrupt=True)))
        dicom = generator.prepare("dicom")
        damaged.append(generator.upload(generator.corrupted(dicom)))
    return Batch(images, damaged)


def contains_phi(data: bytes | str, phi: Iterable[str]) -> list[str]:
    """The planted values found in ``data`` (case-insensitive; bytes read as Latin-1 so nothing is lost)."""
    text = (data.decode("latin-1") if isinstance(data, bytes) else data).lower()
    return [value for value in phi if value.lower() in text]


def dicom_phi(data: bytes, phi: Iterable[str]) -> list[str]:
    """A full tag walk (file meta, every element, sequences, private tags) for planted values."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    found: list[str] = []
    elements = [*ds.file_meta.iterall(), *ds.iterall()] if getattr(ds, "file_meta", None) else list(ds.iterall())
    for element in elements:
        if element.tag == (0x7FE0, 0x0010):  # pixel data: checked by the redaction box
            continue
        value = element.value
        values = value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
        for v in values:
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8", "replace")
            found += [f"{element.keyword or element.tag}: {p}" for p in contains_phi(raw, phi)]
    return found


def box_max(data: bytes, settings: XraySettings) -> float:
    """The brightest pixel inside the burned-in text box (0 = blacked out; text is near 1)."""
    pixels = decode(data)
    x0, y0, x1, y1 = box_pixels(pixels.shape, settings.phi_box)
    return float(pixels[y0:y1, x0:x1].max())


def text_max(original: bytes, output: bytes) -> float:
    """The brightest pixel of ``output`` inside the text regions the detector finds in ``original``
    (0 = blacked out). The detector itself is checked against drawn ground truth in test_xray_images."""
    from kawa.routes.textdetect import detect_text

    regions = detect_text(decode(original))
    assert regions, "the upload carries no detectable text: the check would be vacuous"
    pixels = decode(output)
    return max(float(pixels[r.y0 : r.y1, r.x0 : r.x1].max()) for r in regions)


def box_has_text(settings: XraySettings) -> float:
    """Reference: the same measure on an unredacted generated image (so the box check is not vacuous)."""
    image = RadiographGenerator(0, size=settings.image_size, phi_box=settings.phi_box).generate()
    return float(image.pixels[tuple(_slices(image.pixels, settings))].max())


def _slices(pixels: np.ndarray, settings: XraySettings) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box_pixels(pixels.shape, settings.phi_box)
    return slice(y0, y1), slice(x0, x1)


def result_rows(url: str) -> list[ResultRow]:
    """The results table's rows (after the stack stopped: opens the DB again)."""
    db = ResultsDB(url)
    try:
        return db.rows()
    finally:
        db.close()


def read_topic(log: EventLog, topic: str, expect: int, timeout: float = 30.0) -> list[Record]:
    """Every record of ``topic`` from the start (a fresh group), waiting until ``expect`` arrived."""
    import uuid

    consumer = log.consumer(f"test-{uuid.uuid4().hex[:8]}", [topic], auto_offset_reset="earliest")
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expect and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.3, max_records=500)
        records += consumer.poll(timeout=0.3, max_records=500)  # nothing more should come
    finally:
        consumer.close()
    return records


def record_text(record: Record) -> str:
    parts: list[Any] = [record.key or b"", record.value or b""] + [v for _, v in record.headers]
    return " ".join(p.decode("latin-1") if isinstance(p, bytes) else str(p) for p in parts)


def stop_processes(procs: Iterable[subprocess.Popen[str]], timeout: float = 60.0) -> None:
    """SIGTERM every process still running, then wait for each (SIGKILL one that outlives ``timeout``)."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
