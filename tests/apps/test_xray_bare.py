"""The bare baseline of the X-ray bench (``bench/xray_bare.py``) does the pipeline's work: outputs, rows, no PHI."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import xray_bare  # bench/ is not a package: on sys.path above
from kawa.apps.xray.generator import Generator
from kawa.apps.xray.imaging import decode
from kawa.apps.xray.results import ResultsDB
from kawa.apps.xray.settings import XraySettings
from kawa.ml.registry import Registry
from kawa.routes.textdetect import text_boxes

from .conftest import TrainedModel


def _model_dir(trained_model: TrainedModel, home: Path) -> Path:
    registry = Registry(trained_model.config(home), publish=False)
    try:
        return registry.local_path("pneumonia", 1)
    finally:
        registry.close()


def test_bare_baseline_writes_both_objects_and_a_row_without_phi(tmp_path: Path, trained_model: TrainedModel) -> None:
    settings = XraySettings(image_size=256)
    generator = Generator(settings, folder="/nonexistent", seed=7)
    items = [generator.prepare("png"), generator.prepare("dicom")]
    assert text_boxes(decode(items[0].body)), "the generated PNG carries burned-in text to redact"
    paths = []
    for n, item in enumerate(items):
        path = tmp_path / f"in-{n}"
        path.write_bytes(item.body)
        paths.append(str(path))
    job = xray_bare.BareJob(
        tuple(paths), 2, 0, 1, str(_model_dir(trained_model, tmp_path / "home")), str(tmp_path / "out"),
        f"sqlite:///{tmp_path / 'results.db'}", False, settings.model_dump(mode="json"),
    )  # fmt: skip
    bare = xray_bare.Bare(job)
    bare.run("a.png", paths[0])
    bare.run("b.dcm", paths[1])

    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "processed").iterdir()) == ["a.png", "b.dcm.png"]
    anonymized_png = (out / "anonymized" / "a.png").read_bytes()
    assert anonymized_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert text_boxes(decode(anonymized_png)) == [], "the route's redaction left no text to find"
    anonymized_dicom = (out / "anonymized" / "b.dcm").read_bytes()
    assert anonymized_dicom[128:132] == b"DICM"
    for phi in items[1].image.patient.phi_strings():
        assert phi.encode() not in anonymized_dicom, "a patient identifier survived de-identification"
    rows = ResultsDB(f"sqlite:///{tmp_path / 'results.db'}").rows()
    assert [(r.object_key, r.processed_key) for r in rows] == [("a.png", "a.png"), ("b.dcm", "b.dcm.png")]
    assert all(r.label in ("Normal", "Unsure", "Pneumonia") and 0.0 <= r.risk <= 1.0 for r in rows)


def test_run_bare_times_the_images_in_spawned_processes(tmp_path: Path, trained_model: TrainedModel) -> None:
    settings = XraySettings(image_size=128)
    generator = Generator(settings, folder="/nonexistent", seed=3)
    items = [("image.png", generator.prepare("png").body), ("image.dcm", generator.prepare("dicom").body)]
    images_per_s, cpu_ms = xray_bare.run_bare(
        items, 6, model_dir=_model_dir(trained_model, tmp_path / "home"), work=tmp_path / "work", fsync=True,
        settings=settings.model_dump(mode="json"), processes=2,
    )  # fmt: skip
    assert images_per_s > 0 and cpu_ms > 0
    written = sorted(p.name for p in (tmp_path / "work" / "store" / "anonymized" / "bare").iterdir())
    assert written == [f"{i:06d}" for i in range(6)]
    assert ResultsDB(f"sqlite:///{tmp_path / 'work' / 'results.db'}").count("bare/") == 6
