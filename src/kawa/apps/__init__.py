"""Reference applications built only on Kawa's public API — the examples users copy.

- :mod:`kawa.apps.xray` — pneumonia risk assessment on chest X-rays with PHI removal (``kawa demo xray``).
"""
