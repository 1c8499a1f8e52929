"""A scanner that writes files into the bucket directory (no Kawa API): the store's watcher notifies, the
pipeline assesses them like uploads through the API."""

from __future__ import annotations

from pathlib import Path

from kawa.apps.xray.generator import Generator
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.stack import XrayStack

from .conftest import TrainedModel
from .xray_checks import result_rows


def test_files_dropped_into_the_bucket_folder_are_assessed(tmp_path: Path, trained_model: TrainedModel) -> None:
    from kawa.store.service import build_service

    config = trained_model.config(tmp_path / ".kawa", store={"notify": {"settle_s": 0.2}})
    settings = XraySettings(partitions=1, seed=23)
    with XrayStack(config, settings) as stack:
        watcher = build_service(stack.platform)  # what `kawa up` runs for the local store
        assert watcher is not None
        watcher.start()
        try:
            folder = config.path("buckets", settings.incoming_bucket)
            generator = Generator(settings, folder=folder, seed=23)
            uploads = [generator.upload(generator.prepare(fmt)) for fmt in ("png", "dicom", "png")]
            counts = stack.wait_until(lambda c: c.results >= 3 and c.anonymized >= 3, timeout=240)
        finally:
            watcher.stop()
    assert (counts.uploaded, counts.results, counts.processed, counts.anonymized) == (3, 3, 3, 3), counts
    assert {r.object_key for r in result_rows(stack.results_url)} == {u.key for u in uploads}
    assert not list(folder.rglob("*.part")), "no temporary file is left behind"
