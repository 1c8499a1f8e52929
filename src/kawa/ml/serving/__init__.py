"""``kawa serve-model NAME@ALIAS``: a model over Open Inference Protocol v2, micro-batched, hot-swapped.

The server holds a :class:`~kawa.ml.predictors.ModelManager` handle, so it follows alias moves exactly as
functions do, and logs every prediction to the ``predictions`` topic. With ``experiment`` it routes each
request's unit (``"parameters": {"unit": ...}``) to its arm's model (see
:class:`~kawa.ml.serving.app.InferenceApp`). uvicorn runs it (with uvloop and httptools when installed).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from kawa.errors import BackendUnavailable, KawaError

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.evaluation.serving import ExperimentSource
    from kawa.log.base import EventLog
    from kawa.ml.predictors import ModelManager
    from kawa.ml.serving.app import InferenceApp

__all__ = ["ModelServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ModelServer:
    """Serve ``ref`` on ``host:port``. :meth:`run` blocks (the CLI); :meth:`start`/:meth:`stop` use a thread."""

    def __init__(
        self,
        config: KawaConfig,
        ref: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        log: EventLog | None = None,
        poll_interval_s: float = 1.0,
        manager: ModelManager | None = None,
        experiment: str | None = None,
        experiments: ExperimentSource | None = None,
    ) -> None:
        from kawa.ml.predictors import ModelManager
        from kawa.ml.serving.app import InferenceApp

        self.host, self.port = host, port
        self.manager = manager or ModelManager(config, log, poll_interval_s=poll_interval_s)
        self._own_manager = manager is None
        self.handle = self.manager.get(ref)  # load before accepting requests
        self._own_experiments = experiment is not None and experiments is None
        if self._own_experiments:
            if log is None:
                raise KawaError(f"serving {ref} in experiment {experiment!r} needs the event log the experiment is "
                                "on (leave out --no-log)")
            from kawa.evaluation.experiments import ExperimentsView

            experiments = ExperimentsView(log)
        self.experiments = experiments
        self.app: InferenceApp = InferenceApp(
            self.handle, max_batch=max_batch, max_wait_ms=max_wait_ms, experiment=experiment,
            experiments=experiments, handles=self.manager.get,
        )  # fmt: skip
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _uvicorn(self) -> Any:
        import importlib.util

        import uvicorn

        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            loop=loop,
            http=http,
            lifespan="on",
            log_level="warning",
            access_log=False,
            backlog=2048,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        return self._server

    def run(self) -> None:
        """Serve until interrupted (SIGINT/SIGTERM), then close the manager."""
        try:
            self._uvicorn().run()
        finally:
            self.close()

    def start(self, timeout: float = 20.0) -> ModelServer:
        server = self._uvicorn()
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
        self._thread = threading.Thread(target=server.run, name="kawa-model-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise BackendUnavailable(f"model server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)
        self.close()

    def close(self) -> None:
        if self._own_experiments:
            close = getattr(self.experiments, "close", None)
            if callable(close):
                close()
        if self._own_manager:
            self.manager.close()
