"""The embedded, on-disk event log (see ``log.py``)."""

from kawa.log.embedded.log import EmbeddedLog, build

__all__ = ["EmbeddedLog", "build"]
