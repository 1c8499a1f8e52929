"""Imaging steps: ``dicom-deidentify`` and ``pixel-redact`` (wrappers over :mod:`kawa.routes.deid` and
:mod:`kawa.routes.redact`)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.deadletter import UNDECODABLE, scrub, tag
from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.message import Message, is_dicom

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext


def read_dicom(body: Any) -> Any:
    """A pydicom dataset from a dataset or DICOM bytes; undecodable input is rejected (dead-lettered)."""
    if is_dicom(body):
        return body
    if not isinstance(body, bytes | bytearray | memoryview):
        kind = "text" if isinstance(body, str) else "structured data" if isinstance(body, dict | list) else "no bytes"
        raise tag(MessageRejected(f"expected image or DICOM bytes, got {kind}"), UNDECODABLE)
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        return dcmread(io.BytesIO(bytes(body)))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as exc:
        raise tag(MessageRejected(f"not a readable DICOM file: {type(exc).__name__}: {scrub(str(exc))}"),
                  UNDECODABLE) from exc


def _opts(options: Any, name: str) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidRoute(f"{name}: options must be a mapping")
    return {str(k).replace("_", "-"): v for k, v in options.items()}


class DicomDeidentify:
    """``dicom-deidentify: {profile: basic, retain-patient-characteristics: false, key-file: PATH,
    rename: false}``. The output body is the de-identified dataset; headers ``dicom-study-uid``,
    ``dicom-series-uid`` and ``dicom-sop-uid`` carry the new UIDs, and ``rename: true`` sets the ``key``
    header to ``<study>/<series>/<sop>.dcm`` (an object key that carries no original identifier)."""

    def __init__(self, options: Any, ctx: RouteContext) -> None:
        opts = _opts(options, "dicom-deidentify")
        self.profile = str(opts.pop("profile", "basic"))
        if self.profile != "basic":
            raise InvalidRoute(f"dicom-deidentify: unknown profile {self.profile!r}; use 'basic'")
        self.retain = bool(opts.pop("retain-patient-characteristics", False))
        self.rename = bool(opts.pop("rename", False))
        self.key = ctx.key(opts.pop("key-file", None))
        if opts:
            raise InvalidRoute(
                f"dicom-deidentify: unknown options {sorted(opts)}; use profile, retain-patient-characteristics, "
                "key-file, rename"
            )

    def process(self, message: Message) -> list[Message]:
        from kawa.routes.deid import deidentify_dataset

        ds = read_dicom(message.body)
        ds, report = deidentify_dataset(
            ds, key=self.key, profile=self.profile, retain_patient_characteristics=self.retain
        )
        headers: dict[str, Any] = {
            "content-type": "application/dicom",
            "dicom-study-uid": str(ds.get("StudyInstanceUID", "")),
            "dicom-series-uid": str(ds.get("SeriesInstanceUID", "")),
            "dicom-sop-uid": str(ds.get("SOPInstanceUID", "")),
            "deid-uids-remapped": report.uids_remapped,
            "deid-private-removed": report.private_removed,
        }
        if self.rename:
            headers["key"] = (
                f"{headers['dicom-study-uid']}/{headers['dicom-series-uid']}/{headers['dicom-sop-uid']}.dcm"
            )
            headers["filename"] = f"{headers['dicom-sop-uid']}.dcm"
        return [message.derive(ds, headers=headers)]


class PixelRedact:
    """``pixel-redact: {detect: text|none, boxes: [[x0, y0, x1, y1], ...], rules: [{match: {...}, boxes:
    [...]}], fallback-boxes: [...], margin-px: 2, mode: black|blur}`` on DICOM (dataset or bytes), PNG or
    JPEG bodies.

    ``detect: text`` (the default) redacts the text the detector finds; ``boxes`` are always redacted;
    ``rules`` add their boxes on DICOM whose header matches (keyword → shell pattern). A DICOM declaring
    ``BurnedInAnnotation: YES`` where nothing was found gets ``fallback-boxes``, or is dead-lettered. The
    ``pixel-redact-regions`` header says how many regions were blanked (0: the image is unchanged)."""

    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        from kawa.routes.redact import RedactPlan, check_boxes, check_rules

        opts = _opts(options, "pixel-redact")
        detect = str(opts.pop("detect", "text"))
        if detect not in ("text", "none"):
            raise InvalidRoute(f"pixel-redact: detect must be text or none, got {detect!r}")
        boxes = opts.pop("boxes", None)
        fallback = opts.pop("fallback-boxes", None)
        mode = str(opts.pop("mode", "black"))
        if mode not in ("black", "blur"):
            raise InvalidRoute(f"pixel-redact: mode must be black or blur, got {mode!r}")
        margin = opts.pop("margin-px", 2)
        if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= 64:
            raise InvalidRoute("pixel-redact: margin-px must be a whole number of pixels from 0 to 64")
        rules = check_rules(opts.pop("rules", None))
        if opts:
            raise InvalidRoute(
                f"pixel-redact: unknown options {sorted(opts)}; use detect, boxes, rules, fallback-boxes, "
                "margin-px, mode"
            )
        if detect == "none" and boxes is None and not rules:
            raise InvalidRoute("pixel-redact: with detect: none, give boxes or rules (or it redacts nothing)")
        self.plan = RedactPlan(
            detect=detect == "text",
            boxes=tuple(check_boxes(boxes)) if boxes is not None else (),
            rules=rules,
            fallback_boxes=tuple(check_boxes(fallback)) if fallback is not None else None,
            margin_px=margin,
            mode=mode,  # type: ignore[arg-type]
        )

    def process(self, message: Message) -> list[Message]:
        from kawa.routes.redact import apply_to_dataset, apply_to_image_bytes

        body = message.body
        if isinstance(body, bytes | bytearray | memoryview) and bytes(body[128:132]) != b"DICM":
            data, content_type, regions = apply_to_image_bytes(bytes(body), self.plan)
            return [message.derive(data, headers={"content-type": content_type, "pixel-redact-regions": regions})]
        ds = read_dicom(body)
        regions = apply_to_dataset(ds, self.plan)
        return [message.derive(ds, headers={"content-type": "application/dicom", "pixel-redact-regions": regions})]
