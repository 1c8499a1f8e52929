"""The backbone a capability runs on: the configuration, the event log and the object store.

:func:`open_backends` is the one place that opens them from configuration. Every capability and factory
(functions, routes, the registry, jobs, the portal, apps) takes a :class:`Backends` and never opens a log
or a store itself. Tests and embedders hand over what they already hold with :func:`given_backends`.

A store opened here keeps each project within its ``storage_bytes`` quota (:mod:`kawa.store.quota`); a store
handed over is used as it is. The log opens first and the store gets it (a store publishes its notifications
to the log), so the two never open each other and no re-entrant lock is needed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.log.base import EventLog
    from kawa.store.base import ObjectStore

__all__ = ["Backends", "ConfiguredBackends", "given_backends", "open_backends"]


@runtime_checkable
class Backends(Protocol):
    """What every capability is handed: ``config``, ``log`` and ``store`` (opened on first use)."""

    @property
    def config(self) -> KawaConfig: ...

    @property
    def log(self) -> EventLog: ...

    @property
    def store(self) -> ObjectStore: ...

    def close(self) -> None:
        """Close what these backends opened (never what was handed in)."""


class ConfiguredBackends:
    """Backends opened lazily from a configuration, each once, shared by every capability."""

    def __init__(
        self, config: KawaConfig, *, log: EventLog | None = None, store: ObjectStore | None = None
    ) -> None:
        self._config = config
        self._log = log
        self._store = store
        self._owned: set[str] = set()
        self._log_lock = threading.Lock()
        self._store_lock = threading.Lock()

    @property
    def config(self) -> KawaConfig:
        return self._config

    @property
    def log(self) -> EventLog:
        if self._log is None:
            with self._log_lock:
                if self._log is None:
                    from kawa.log import open_log

                    self._log = open_log(self._config.log.uri, self._config)
                    self._owned.add("log")
        return self._log

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            log = self.log  # outside the store lock: the log never needs the store
            with self._store_lock:
                if self._store is None:
                    from kawa.store import open_store
                    from kawa.store.quota import with_storage_quota

                    opened = open_store(self._config.store.uri, self._config, log=log)
                    self._store = with_storage_quota(opened, self._config)
                    self._owned.add("store")
        return self._store

    def opened(self, name: str) -> bool:
        """Whether ``name`` (``"log"`` or ``"store"``) is open, without opening it."""
        return (self._log if name == "log" else self._store) is not None

    def close(self) -> None:
        """Close the store, then the log, if these backends opened them."""
        with self._store_lock:
            store, self._store = self._store, None
            if store is not None and "store" in self._owned and hasattr(store, "close"):
                store.close()
            self._owned.discard("store")
        with self._log_lock:
            log, self._log = self._log, None
            if log is not None and "log" in self._owned:
                log.close()
            self._owned.discard("log")

    def __enter__(self) -> ConfiguredBackends:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_backends(config: KawaConfig | None = None) -> ConfiguredBackends:
    """The backends ``config`` names (default: the loaded ``kawa.yaml`` + ``KAWA_*`` environment)."""
    if config is None:
        from kawa.config import load_config

        config = load_config()
    return ConfiguredBackends(config)


def given_backends(
    config: KawaConfig | None = None, *, log: EventLog | None = None, store: ObjectStore | None = None
) -> ConfiguredBackends:
    """Backends around a log and/or store the caller holds (and closes); missing ones open from config."""
    if config is None:
        from kawa.config import load_config

        config = load_config()
    return ConfiguredBackends(config, log=log, store=store)
