"""Card-fraud detection on Kawa: the pure core of the reference app (issue 17).

After the *Fraud Detection Handbook*'s published design (Le Borgne et al., re-implemented, no code copied):

- :mod:`~kawa.apps.fraud.transactions` — the columnar transaction table and its time helpers;
- :mod:`~kawa.apps.fraud.sim` — the seeded, vectorised simulator: customer and terminal profiles, the three
  handbook fraud scenarios and a fourth pattern (card testing) that starts mid-run;
- :mod:`~kawa.apps.fraud.labels` — delayed labels as outcome events: investigations of the top-k cards a day
  (plus a randomised share with known propensity) and customer chargebacks;
- :mod:`~kawa.apps.fraud.features` — the handbook's features as a keyed streaming state machine;
- :mod:`~kawa.apps.fraud.backfill` — the same features as DuckDB SQL and as vectorised numpy (training backfills);
- :mod:`~kawa.apps.fraud.decisions` — block / investigate / pass in the stream, within the investigators'
  capacity, with a randomised share and propensities;
- :mod:`~kawa.apps.fraud.metrics` — CP@k a day, AUROC, AUPRC;
- :mod:`~kawa.apps.fraud.baseline` — the handbook's depth-2 decision tree and its train/delay/test protocol.

These are pure (no I/O, no clock). On them:

- :mod:`~kawa.apps.fraud.train` — the LightGBM training job (protocol, prequential selection, registration);
- :mod:`~kawa.apps.fraud.engine` — scorers: a compiled engine (lleaves/tl2cgen) behind a parity gate, LightGBM,
  ONNX Runtime;
- :mod:`~kawa.apps.fraud.batch` — batch scoring of Parquet data sets in bounded memory.
- :mod:`~kawa.apps.fraud.kaggle` — the real Kaggle/ULB set: located, checked, split in time, evaluated.

See docs/fraud.md.
"""
