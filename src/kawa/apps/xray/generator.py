"""The scanner stand-in: uploads generated radiographs at a steady rate, through the store or into a folder.

The mix follows the settings (default 80% normal / 20% pneumonia, a quarter as DICOM). Keys carry no patient
data (``scans/000042-1a2b3c4d.dcm``); the patient data is where a scanner puts it — burned into the pixels
and, for DICOM, in the header. Each :class:`Upload` keeps the truth (pneumonia or not) and the scanner that
rendered it: the simulated radiologist reads (:mod:`kawa.apps.xray.reads`) are made from it. The scanner
switches to ``settings.shifted_scanner`` after ``settings.scanner_shift_after`` uploads, or when
:meth:`Generator.switch_scanner` is called.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kawa.apps.xray.settings import ScannerProfile, XraySettings
from kawa.apps.xray.synth import CONTENT_TYPES, EXTENSIONS, Format, Radiograph, RadiographGenerator


@dataclass(frozen=True)
class Upload:
    """What was uploaded. ``corrupt``: damaged bytes that the pipeline must dead-letter; ``scanner``: the
    name of the scanner profile that rendered it; ``bucket``: where it went (empty for a folder)."""

    key: str
    fmt: str
    pneumonia: bool
    phi: tuple[str, ...]
    size: int
    put_time: float
    corrupt: bool = False
    scanner: str = "scanner-a"
    bucket: str = ""


@dataclass(frozen=True)
class Prepared:
    """One image ready to upload: its encoded bytes and what it is."""

    body: bytes
    fmt: Format
    image: Radiograph
    corrupt: bool = False
    scanner: str = "scanner-a"


class Generator:
    """Uploads to ``store`` (any :class:`~kawa.store.ObjectStore`) or, with ``folder``, writes files into it
    (e.g. a bucket directory that the local store watches). Thread-safe counters; :meth:`run` paces."""

    def __init__(
        self,
        settings: XraySettings,
        *,
        store: Any = None,
        folder: str | Path | None = None,
        seed: int | None = None,
        prefix: str = "scans/",
        pool: int = 0,
    ) -> None:
        if (store is None) == (folder is None):
            raise ValueError("give the generator either a store or a folder")
        self.settings = settings
        self.store = store
        self.folder = Path(folder) if folder is not None else None
        self.prefix = prefix
        seed = settings.seed if seed is None else seed
        self._images = RadiographGenerator(
            seed,
            size=settings.image_size,
            phi_box=settings.phi_box,
            pneumonia_fraction=settings.pneumonia_fraction,
            profile=settings.scanner,
        )
        self._rng = np.random.default_rng(seed + 1)
        self._run_id = uuid.uuid4().hex[:6]
        self._pool = [self.prepare() for _ in range(pool)]
        self._lock = threading.Lock()
        self._seq = 0
        self.switched_at: int | None = None
        """The sequence number of the first upload rendered by the shifted scanner (None: not switched)."""
        self.uploads: list[Upload] = []

    @property
    def scanner(self) -> ScannerProfile:
        """The scanner profile rendering new images."""
        return self._images.profile

    def switch_scanner(self, profile: ScannerProfile | None = None) -> None:
        """Render the next uploads with ``profile`` (default: ``settings.shifted_scanner``), the pool too: it is
        generated afresh with the new scanner."""
        with self._lock:
            self._switch(profile or self.settings.shifted_scanner)

    def _switch(self, profile: ScannerProfile) -> None:
        self._images.switch_scanner(profile)
        self._pool = [self.prepare() for _ in range(len(self._pool))]
        self.switched_at = self._seq

    def prepare(self, fmt: Format | None = None) -> Prepared:
        """Generate and encode one image (format drawn from the mix unless given)."""
        image = self._images.generate()
        if fmt is None:
            fmt = "dicom" if self._rng.random() < self.settings.dicom_fraction else "png"
        return Prepared(image.encode(fmt), fmt, image, scanner=self._images.profile.name)

    def corrupted(self, item: Prepared) -> Prepared:
        """``item`` cut short: a transfer that broke off (headers intact, pixel data missing)."""
        return Prepared(item.body[: max(64, len(item.body) // 3)], item.fmt, item.image, True, item.scanner)

    def upload(self, item: Prepared | None = None) -> Upload:
        """Upload one image (a fresh one, the next of the pool, or ``item``)."""
        shift = self.settings.scanner_shift_after
        with self._lock:
            if shift is not None and self.switched_at is None and self._seq >= shift:
                self._switch(self.settings.shifted_scanner)
            seq = self._seq
            self._seq += 1
        if item is None:
            item = self._pool[seq % len(self._pool)] if self._pool else self.prepare()
            if self.settings.corrupt_fraction and self._rng.random() < self.settings.corrupt_fraction:
                item = self.corrupted(item)
        key = f"{self.prefix}{seq:06d}-{self._run_id}{EXTENSIONS[item.fmt]}"
        put_time = time.time()
        if self.store is not None:
            self.store.put(self.settings.incoming_bucket, key, item.body, content_type=CONTENT_TYPES[item.fmt])
        else:
            assert self.folder is not None
            target = self.folder / key
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            tmp.write_bytes(item.body)
            os.replace(tmp, target)
        done = Upload(
            key,
            item.fmt,
            item.image.pneumonia,
            tuple(item.image.patient.phi_strings()),
            len(item.body),
            put_time,
            item.corrupt,
            item.scanner,
            self.settings.incoming_bucket if self.store is not None else "",
        )
        with self._lock:
            self.uploads.append(done)
        return done

    def run(
        self,
        *,
        rate: float | None = None,
        count: int | None = None,
        duration: float | None = None,
        stop: threading.Event | None = None,
        on_upload: Callable[[Upload], None] | None = None,
    ) -> int:
        """Upload at ``rate`` per second until ``count`` images, ``duration`` seconds or ``stop``; returns how
        many were uploaded. The schedule is absolute, so a slow upload is caught up, never drifting."""
        rate = rate or self.settings.rate
        stop = stop or threading.Event()
        started = time.monotonic()
        done = 0
        while not stop.is_set():
            if count is not None and done >= count:
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            due = started + done / rate
            wait = due - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            upload = self.upload()
            done += 1
            if on_upload is not None:
                on_upload(upload)
        return done
