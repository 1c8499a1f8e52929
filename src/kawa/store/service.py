"""The ``kawa up`` service of the object store: watchers (local backend) and bridges (S3 backend)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from kawa.errors import KawaError

if TYPE_CHECKING:
    from kawa.config import StoreNotifyConfig
    from kawa.platform import Platform, Service
    from kawa.store.bridge import SqsBridge
    from kawa.store.s3 import S3Store

log = logging.getLogger("kawa.store.service")


class S3BridgeService:
    """Runs one SQS bridge per queue that ``sqs`` rules use, and the polling bridge for ``poll`` rules.

    Rules added while it runs (``kawa notify add``) are picked up within ``poll_interval_s``. ``rgw`` rules
    need nothing: the RGW pushes to Kafka itself.
    """

    name = "store-bridge"

    def __init__(self, store: S3Store, notify: StoreNotifyConfig) -> None:
        self.store = store
        self.notify = notify
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._bridges: dict[str, SqsBridge] = {}
        self._main: threading.Thread | None = None

    def start(self) -> None:
        self._main = threading.Thread(target=self._run, name="kawa-store-bridge", daemon=True)
        self._main.start()

    def _run(self) -> None:
        from kawa.store.bridge import PollBridge, PollState

        state = PollState(self.store.config.path("store", "poll-state.sqlite"))
        poller = PollBridge(self.store, state)
        try:
            while not self._stop.is_set():
                try:
                    self._ensure_sqs_bridges()
                    poller.run_once()
                except KawaError as exc:
                    log.warning("store bridge: %s", exc)
                self._stop.wait(self.notify.poll_interval_s)
        finally:
            state.close()

    def _ensure_sqs_bridges(self) -> None:
        from kawa.store.bridge import SqsBridge

        for rule in self.store.registry.rules():
            url = rule.target
            if rule.mode != "sqs" or not url or url in self._bridges:
                continue
            bridge = SqsBridge(self.store, url)
            self._bridges[url] = bridge
            thread = threading.Thread(
                target=bridge.run, args=(self._stop, self.notify.sqs_wait_s), name="kawa-sqs-bridge", daemon=True
            )
            thread.start()
            self._threads.append(thread)
            log.info("bridging S3 notifications from %s", url)

    def stop(self) -> None:
        self._stop.set()
        for thread in [*self._threads, *([self._main] if self._main else [])]:
            thread.join(timeout=self.notify.sqs_wait_s + 10)


def build_service(platform: Platform) -> Service | None:
    """The store's service for ``kawa up``: the local watcher, the S3 bridges, or nothing (memory)."""
    from kawa.store.local import LocalStore
    from kawa.store.s3 import S3Store

    store = getattr(platform.store, "inner", platform.store)  # the backend under the storage quota
    notify = platform.config.store.notify
    if isinstance(store, LocalStore):
        from kawa.store.watcher import LocalWatchService

        return LocalWatchService(store, notify.settle_s, notify.rescan_interval_s)
    if isinstance(store, S3Store):
        return S3BridgeService(store, notify)
    return None
