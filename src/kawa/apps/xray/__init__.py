"""Pneumonia risk on chest X-rays, end to end, on Kawa's public API (``kawa demo xray``).

- :mod:`~kawa.apps.xray.settings` — buckets, topics, thresholds, the burned-in text box (one frozen model).
- :mod:`~kawa.apps.xray.synth` / :mod:`~kawa.apps.xray.dicom` — synthetic radiographs with planted fake PHI,
  as PNG/JPEG/DICOM; :mod:`~kawa.apps.xray.datasets` — bring real images (``train|test/NORMAL|PNEUMONIA``).
- :mod:`~kawa.apps.xray.imaging` — decode, redact, model input, annotate.
- :mod:`~kawa.apps.xray.train` — the trainer (a Kawa job): ONNX model, MLflow metrics, registry, champion.
- :mod:`~kawa.apps.xray.pipeline` — the ``risk-assessment`` function (``kawa.apps.xray.pipeline:app``).
- :mod:`~kawa.apps.xray.deid` — the de-identification route to the anonymized bucket.
- :mod:`~kawa.apps.xray.results` — the results table (SQLite / PostgreSQL).
- :mod:`~kawa.apps.xray.generator` — uploads images at a rate (and switches scanner mid-run);
  :mod:`~kawa.apps.xray.stack` — all of it on one platform, with live counts.
- :mod:`~kawa.apps.xray.features` — the image summary each decision record keeps; :mod:`~kawa.apps.xray.reads`
  — simulated delayed radiologist reads as outcome events; :mod:`~kawa.apps.xray.scenario` — the scanner-change
  scenario measured offline.

See docs/xray.md.
"""
