"""Sepsis early warning (issue 16): the pure, tested core the app is built on.

- :mod:`~kawa.apps.sepsis.settings` — the simulated hospital's settings (frozen pydantic models).
- :mod:`~kawa.apps.sepsis.cohort`, :mod:`~kawa.apps.sepsis.latent`, :mod:`~kawa.apps.sepsis.physiology` —
  patients, their physiology and the Sepsis-3 ground truth; :mod:`~kawa.apps.sepsis.care` — clinicians,
  outcomes and the true treatment effect; :mod:`~kawa.apps.sepsis.sim` — observations as numpy columns and
  as a stream in event-time order.
- :mod:`~kawa.apps.sepsis.codes` — observation codes and their LOINC codes.
- :mod:`~kawa.apps.sepsis.scores` — qSOFA, SIRS and NEWS2 per their published tables.
- :mod:`~kawa.apps.sepsis.features` — per-patient features, streaming (``FeatureState``/``update``) and batch,
  identical.
- :mod:`~kawa.apps.sepsis.fhir` — FHIR R4 Observation / Bundle encoder, decoder and validator.
- :mod:`~kawa.apps.sepsis.calibration` — the simulator against the published baselines.

No I/O anywhere here; the plugin, functions and demo come on top. See docs/sepsis.md.
"""
