"""The object store as the portal sees it: buckets, notification wiring, object listings that stay cheap,
and image thumbnails. PHI policy: a bucket is PHI-free only when declared so; see :meth:`StoreSource.phi_free`."""

from __future__ import annotations

import heapq
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kawa.errors import KawaError, NotConfigured

THUMBNAIL_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DICOM_TYPES = ("application/dicom", "application/dicom+octet-stream")
MAX_THUMBNAIL_SOURCE = 64 * 1024 * 1024


@dataclass(frozen=True)
class BucketView:
    """What a bucket listing shows: a count and the newest objects (cached; listings can be large)."""

    bucket: str
    count: int
    newest: tuple[Any, ...]  # ObjectInfo, newest first
    listed_at: float
    exists: bool = True


@dataclass
class _Cached:
    view: BucketView
    cost_s: float
    next_at: float = 0.0


@dataclass
class PhiPolicy:
    """Buckets whose objects carry no PHI. Everything else needs ``phi.read``."""

    configured: tuple[str, ...] = ()
    extra: Callable[[], Iterable[str]] | None = None

    def phi_free(self, bucket: str) -> bool:
        names = set(self.configured)
        if self.extra is not None:
            names.update(self.extra())
        return bucket in names


class StoreSource:
    """Reads the store for the portal. ``opener`` returns the platform's store (it may raise)."""

    def __init__(self, opener: Callable[[], Any], phi: PhiPolicy) -> None:
        self._opener = opener
        self.phi = phi
        self._store: Any = None
        self._lock = threading.Lock()
        self._views: dict[str, _Cached] = {}
        self._thumbs: OrderedDict[tuple[str, str, str, int], bytes] = OrderedDict()

    @property
    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                try:
                    self._store = self._opener()
                except ImportError as exc:
                    raise NotConfigured(
                        "the object store is not available in this installation (kawa.store is missing)"
                    ) from exc
            return self._store

    def available(self) -> tuple[bool, str | None]:
        try:
            _ = self.store
        except KawaError as exc:
            return False, str(exc)
        return True, None

    def project_bytes(self, project: str) -> int | None:
        """The bytes a project with a ``storage_bytes`` limit holds, as the store's quota measures it (at most
        ``store.quota_refresh_s`` old); None for a project with no limit, or when the store cannot tell."""
        from kawa.store.quota import QuotaStore

        try:
            store = self.store
            if not isinstance(store, QuotaStore) or store.limits().limit(project) is None:
                return None
            return store.used(project)
        except KawaError:
            return None

    def buckets(self) -> list[Any]:
        return list(self.store.list_buckets())

    def notifications(self, bucket: str) -> list[Any]:
        try:
            return list(self.store.notifications(bucket))
        except KawaError:
            return []

    def view(self, bucket: str, newest: int = 10, max_age_s: float = 2.0, *, fresh: bool = False) -> BucketView:
        """Count and newest objects of ``bucket``. Re-listed at most every ``max_age_s`` and never more
        often than 20 times the time the last listing took, so a large bucket costs at most ~5% of a core;
        ``fresh`` lists it now (the caller paces itself)."""
        from kawa.store.base import iter_objects

        now = time.monotonic()
        cached = self._views.get(bucket)
        if not fresh and cached is not None and now < cached.next_at:
            return cached.view
        if not self.store.bucket_exists(bucket):
            view = BucketView(bucket, 0, (), time.time(), exists=False)
            self._views[bucket] = _Cached(view, 0.0, now + max_age_s)
            return view
        started = time.monotonic()
        count = 0
        heap: list[tuple[float, str, Any]] = []
        for info in iter_objects(self.store, bucket):
            count += 1
            stamp = info.last_modified.timestamp() if info.last_modified is not None else 0.0
            item = (stamp, info.key, info)
            if len(heap) < newest:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
        ordered = tuple(info for _stamp, _key, info in sorted(heap, key=lambda x: (x[0], x[1]), reverse=True))
        cost = time.monotonic() - started
        view = BucketView(bucket, count, ordered, time.time())
        self._views[bucket] = _Cached(view, cost, time.monotonic() + max(max_age_s, 20 * cost))
        return view

    def thumbnail(self, bucket: str, key: str, size: int) -> tuple[bytes, str]:
        """A PNG/JPEG no larger than ``size`` pixels on its longer side (DICOM rendered to PNG).

        Cached by ETag; raises :class:`KawaError` for content that is not an image."""
        info = self.store.head(bucket, key)
        cache_key = (bucket, key, info.etag, size)
        with self._lock:
            if cache_key in self._thumbs:
                self._thumbs.move_to_end(cache_key)
                return self._thumbs[cache_key], "image/png"
        if info.size > MAX_THUMBNAIL_SOURCE:
            raise KawaError(f"{bucket}/{key} is {info.size} bytes; thumbnails are made of images up to 64 MiB")
        with self.store.get(bucket, key) as reader:
            data = reader.read()
        png = render_thumbnail(data, info.content_type or "", key, size)
        with self._lock:
            self._thumbs[cache_key] = png
            while len(self._thumbs) > 512:
                self._thumbs.popitem(last=False)
        return png, "image/png"


def _is_dicom(data: bytes, content_type: str, key: str) -> bool:
    return (
        content_type.split(";")[0].strip() in DICOM_TYPES
        or key.lower().endswith((".dcm", ".dicom"))
        or data[128:132] == b"DICM"
    )


def render_thumbnail(data: bytes, content_type: str, key: str, size: int) -> bytes:
    """Downscale an image (PNG, JPEG, GIF, WebP, or a DICOM's pixels) to a PNG of at most ``size`` px."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # Pillow comes with the ml extra
        raise KawaError("thumbnails need Pillow; install it with `pip install 'kawa[ml]'`") from exc
    if _is_dicom(data, content_type, key):
        image = _dicom_image(data)
    else:
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise KawaError(
                f"{key} ({content_type or 'unknown type'}) is not an image a thumbnail can be made of"
            ) from exc
    image.thumbnail((size, size))
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _dicom_image(data: bytes) -> Any:
    try:
        import numpy as np
        import pydicom
        from PIL import Image
    except ImportError as exc:
        raise KawaError("DICOM thumbnails need pydicom and numpy: `pip install pydicom numpy`") from exc
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        pixels = ds.pixel_array.astype("float64")
    except Exception as exc:  # pydicom raises many types for unreadable pixel data
        raise KawaError(f"the DICOM object's pixels cannot be decoded: {type(exc).__name__}") from exc
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[0]
    low, high = float(np.percentile(pixels, 0.5)), float(np.percentile(pixels, 99.5))
    scaled = np.clip((pixels - low) / max(high - low, 1e-9), 0, 1) * 255
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 255 - scaled
    return Image.fromarray(scaled.astype("uint8"))
