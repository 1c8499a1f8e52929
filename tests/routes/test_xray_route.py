"""The issue's example, with the X-ray app's names, under `kawa up`: S3 events of bucket xray-images on topic
xray-images → fetch → dicom-deidentify → pixel-redact → bucket xray-images-anonymized. The anonymized bucket
fills with files that carry no PHI: burned-in text is found and blacked out where it is, and a real radiograph
without text keeps every pixel."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from kawa.apps.xray.synth import RadiographGenerator, render_chest
from kawa.config import load_config
from kawa.routes.message import dicom_bytes
from tests.routes.conftest import wait_for
from tests.routes.test_deid import PLANTED, _planted

ROUTES = """
routes:
  - id: deidentify-xrays
    from: topic:xray-images?group=deid
    steps:
      - fetch: {}                          # load the object the S3 event points to
      - dicom-deidentify: {profile: basic, rename: true}
      - pixel-redact: {detect: text, mode: black, margin-px: 2}   # burned-in text, where it is
    to: bucket:xray-images-anonymized
    errors: {dead-letter: "topic:deid.dlq", max-redeliveries: 3, backoff: exponential}
"""


def test_anonymized_bucket_fills_without_phi_under_kawa_up(tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from kawa.backends import open_backends
    from kawa.store import NotificationRule

    (tmp_path / "kawa.yaml").write_text(
        f"home: {tmp_path / '.kawa'}\nstore: {{uri: '{tmp_path / 'buckets'}'}}\nportal: {{port: 0}}\n"
    )
    (tmp_path / "routes.yaml").write_text(ROUTES)
    env = {**os.environ, "KAWA_CONFIG": str(tmp_path / "kawa.yaml")}
    env.pop("KAWA_HOME", None)
    cli = [sys.executable, "-m", "kawa.cli"]
    config = load_config(tmp_path / "kawa.yaml", env={})
    backends = open_backends(config)
    store = backends.store
    store.create_bucket("xray-images", exist_ok=True)
    store.add_notification(NotificationRule(bucket="xray-images", topic="xray-images"))
    applied = subprocess.run(
        [*cli, "routes", "apply", str(tmp_path / "routes.yaml")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    up = subprocess.Popen([*cli, "up"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        rg1 = Path(get_testdata_file("RG1_UNCI.dcm") or "").read_bytes()
        generated = RadiographGenerator(5, size=256).generate(pneumonia=False)  # text burned in, header YES
        originals = {
            "in/ward7/doe-johnathan-1.dcm": dicom_bytes(
                _planted("1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.7.1")
            ),
            "in/ward7/doe-johnathan-2.dcm": dicom_bytes(
                _planted("1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.7.2")
            ),
            "in/rg1.dcm": rg1,
            "in/generated.dcm": generated.dicom(),
        }
        for key, data in originals.items():
            store.put("xray-images", key, data, content_type="application/dicom")

        def anonymized() -> list[str]:
            if not store.bucket_exists("xray-images-anonymized"):
                return []
            return [o.key for o in store.list_objects("xray-images-anonymized").objects]

        keys = wait_for(lambda: len(anonymized()) == 4 and anonymized(), timeout=90)
    finally:
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=60)[0].decode(errors="replace")
    assert up.returncode == 0, output
    assert "stopped cleanly" in output
    rg1_ds = dcmread(io.BytesIO(rg1))
    secrets = [
        *PLANTED.values(),
        "Johnathan",
        "doe-johnathan",
        "ward7",
        "PrivateSecretValue",
        "1.2.826.0.1.3680043.8.498.7",
        "CompressedSamples",
        "9RG1",
        "Philips Medical Systems Hamburg",
        str(rg1_ds.StudyInstanceUID),
        *generated.patient.phi_strings(),
    ]
    clean = render_chest(np.random.default_rng(5), 256, pneumonia=False)  # the generated image without text
    text = (generated.pixels != clean) & (generated.pixels > clean * 0.08 + 1e-6)
    assert text.sum() > 200
    seen = set()
    studies = set()
    for key in keys:
        assert not any(s in key for s in secrets), key
        with store.get("xray-images-anonymized", key) as reader:
            raw = reader.read()
        for secret in secrets:
            assert secret.encode() not in raw, (key, secret)
        ds = dcmread(io.BytesIO(raw))
        assert ds.PatientIdentityRemoved == "YES"
        pixels = ds.pixel_array
        studies.add(key.split("/")[0])
        if pixels.shape == rg1_ds.pixel_array.shape:  # the real CR image has no text: not one pixel blanked
            assert np.array_equal(pixels, rg1_ds.pixel_array)
            seen.add("rg1")
        elif pixels.shape == text.shape:  # the generated one: every glyph pixel black, the anatomy kept
            assert (pixels[text] == 0).all()
            assert np.array_equal(pixels[:200], np.round(generated.pixels[:200] * 4095).astype(pixels.dtype))
            seen.add("generated")
    assert seen == {"rg1", "generated"}
    assert len(studies) == 3  # the two planted files share one (remapped) study
    backends.close()
