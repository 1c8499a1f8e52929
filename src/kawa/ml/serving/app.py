"""The inference server: a small ASGI application speaking Open Inference Protocol v2 over REST.

Routes: ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}`` (metadata), ``GET /v2/models/{name}/ready``,
``POST /v2/models/{name}[/versions/{v}]/infer``, ``GET /v2/models/{name}/stats`` (batch sizes, version,
swaps) and ``GET /metrics`` (the same in Prometheus text). Errors are ``{"error": "..."}`` with 400 (bad
request, shape, datatype), 404 (unknown model, version or route), 405, 500 (the model failed).

Written directly against ASGI (no framework): a request does one dict lookup, one JSON parse and one queue
hop before its batch runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from kawa import __version__
from kawa.errors import InvalidModelInput
from kawa.evaluation.serving import check_model, plan
from kawa.ml.predictors import ModelHandle
from kawa.ml.serving.batcher import MicroBatcher
from kawa.ml.serving.oip import datatype_of, decode_request, dumps, encode_response, spec_shape

if TYPE_CHECKING:
    from kawa.evaluation.serving import ExperimentSource

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class InferenceApp:
    """Serves one model reference (its handle follows alias moves) with micro-batching.

    With ``experiment`` (and ``experiments``, where it is found, and ``handles``, which loads an arm's model
    reference), a request names its randomisation unit in ``"parameters": {"unit": ...}``: it is scored by the
    model of the unit's arm (one micro-batcher per arm), recorded with the arm and its propensity, and the
    response's ``parameters`` say ``experiment``, ``arm``, ``propensity`` and ``acts``. A stopped experiment
    serves the reference itself.
    """

    def __init__(
        self,
        handle: ModelHandle,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        experiment: str | None = None,
        experiments: ExperimentSource | None = None,
        handles: Callable[[str], ModelHandle] | None = None,
    ) -> None:
        self.handle = handle
        self.batcher = MicroBatcher(handle.current, max_batch=max_batch, max_wait_ms=max_wait_ms)
        self.name = handle.name
        self.experiment = experiment
        if experiment is not None and (experiments is None or handles is None):
            raise ValueError("an experiment needs experiments= (where it is found) and handles= (arm models)")
        self._experiments = experiments
        self._handles = handles
        self._arm_batchers: dict[str, MicroBatcher] = {}
        self._max_batch, self._max_wait_ms = max_batch, max_wait_ms
        if experiment is not None and experiments is not None:
            check_model(experiments.get(experiment), str(handle.ref))  # fail at start, not per request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, body = await self._route(scope, receive)
        except HTTPError as exc:
            status, body = exc.status, dumps({"error": str(exc)})
        except InvalidModelInput as exc:
            status, body = 400, dumps({"error": str(exc)})
        except Exception as exc:
            status, body = 500, dumps({"error": f"prediction failed: {type(exc).__name__}: {exc}"})
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.batcher.close()
                for batcher in self._arm_batchers.values():
                    batcher.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        method, path = scope["method"], scope["path"].rstrip("/")
        parts = path.split("/")[1:]
        if parts[:1] == ["metrics"] and method == "GET":
            return 200, self._metrics().encode()
        if parts[:1] != ["v2"]:
            raise HTTPError(404, f"no route {path}; this is an Open Inference Protocol v2 server under /v2")
        rest = parts[1:]
        if not rest:
            return 200, dumps({"name": "kawa", "version": __version__, "extensions": ["kawa-stats"]})
        if rest == ["health", "live"]:
            return 200, dumps({"live": True})
        if rest == ["health", "ready"]:
            return 200, dumps({"ready": True})
        if rest[0] != "models" or len(rest) < 2:
            raise HTTPError(404, f"no route {path}")
        self._check_model(rest[1])
        tail = rest[2:]
        if len(tail) >= 2 and tail[0] == "versions":
            self._check_version(tail[1])
            tail = tail[2:]
        if not tail:
            return 200, dumps(self._metadata())
        if tail == ["ready"]:
            return 200, dumps({"name": self.name, "ready": True})
        if tail == ["stats"]:
            return 200, dumps(self._stats())
        if tail == ["infer"]:
            if method != "POST":
                raise HTTPError(405, "infer takes POST")
            return 200, await self._infer(receive)
        raise HTTPError(404, f"no route {path}")

    def _check_model(self, name: str) -> None:
        if name != self.name:
            raise HTTPError(404, f"unknown model {name!r}; this server serves {self.name!r} ({self.handle.ref})")

    def _check_version(self, version: str) -> None:
        if version != str(self.handle.version):
            raise HTTPError(
                404,
                f"version {version} of {self.name!r} is not served; {self.handle.ref} is version "
                f"{self.handle.version} now",
            )

    async def _infer(self, receive: Receive) -> bytes:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        model = self.handle.current()
        x, request_id, parameters = decode_request(body, model.input_spec)
        if self.experiment is None or self._experiments is None:
            out, used = await self.batcher.submit(x, request_id)
            return encode_response(used.name, used.version, out, request_id, used.output_spec.name)
        state = self._experiments.get(self.experiment)
        if not state.running:
            out, used = await self.batcher.submit(x, request_id)
            return encode_response(used.name, used.version, out, request_id, used.output_spec.name,
                                   {"experiment": state.name, "status": state.status})  # fmt: skip
        unit = parameters.get("unit")
        if not isinstance(unit, str | int) or isinstance(unit, bool) or str(unit) == "":
            raise HTTPError(400, f'this server runs experiment {state.name!r}, randomised by {state.spec.unit!r}: '
                                 'send "parameters": {"unit": "<its value>"} with each request')
        chosen = plan(state, str(self.handle.ref), str(unit))
        pending = [self._arm_batcher(chosen.ref).submit(x, request_id, chosen.allocation)]
        pending += [self._arm_batcher(ref).submit(x, request_id, allocation) for ref, allocation in chosen.shadows]
        results = await asyncio.gather(*pending)
        out, used = results[0]
        d = chosen.allocation
        return encode_response(used.name, used.version, out, request_id, used.output_spec.name,
                               {"experiment": d.experiment, "arm": d.arm, "propensity": d.propensity,
                                "acts": d.acting})  # fmt: skip

    def _arm_batcher(self, ref: str) -> MicroBatcher:
        if ref == str(self.handle.ref):
            return self.batcher
        batcher = self._arm_batchers.get(ref)
        if batcher is None:
            assert self._handles is not None
            handle = self._handles(ref)
            batcher = MicroBatcher(handle.current, max_batch=self._max_batch, max_wait_ms=self._max_wait_ms)
            self._arm_batchers[ref] = batcher
        return batcher

    def _metadata(self) -> dict[str, Any]:
        model = self.handle.current()
        spec = model.input_spec
        return {
            "name": self.name,
            "versions": [str(model.version)],
            "platform": f"kawa-{model.flavor}",
            "inputs": [
                {
                    "name": spec.name,
                    "datatype": datatype_of(spec.dtype) if spec.dtype is not None else "FP64",
                    "shape": spec_shape(spec),
                }
            ],
            "outputs": [{"name": model.output_spec.name, "datatype": "FP64", "shape": [-1]}],
            "parameters": {"reference": str(self.handle.ref), "swaps": self.handle.swaps},
        }

    def _stats(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "reference": str(self.handle.ref),
            "version": self.handle.version,
            "swaps": self.handle.swaps,
            "max_batch": self.batcher.max_batch,
            "max_wait_ms": self.batcher.max_wait_s * 1000,
            **self.batcher.stats.as_dict(),
        }

    def _metrics(self) -> str:
        s = self.batcher.stats
        labels = f'model="{self.name}"'
        lines = [
            "# TYPE kawa_inference_requests_total counter",
            f"kawa_inference_requests_total{{{labels}}} {s.requests}",
            "# TYPE kawa_inference_batches_total counter",
            f"kawa_inference_batches_total{{{labels}}} {s.batches}",
            "# TYPE kawa_inference_batch_size counter",
            *(f'kawa_inference_batch_size{{{labels},size="{k}"}} {v}' for k, v in sorted(s.sizes.items())),
            "# TYPE kawa_model_version gauge",
            f"kawa_model_version{{{labels}}} {self.handle.version}",
        ]
        return "\n".join(lines) + "\n"
