"""Applications and their functions: ``app = kawa.App("xray")`` and ``@app.function(...)``.

A function is a handler ``(event: CloudEvent, ctx: kawa.Context) -> CloudEvent | list[CloudEvent] | None``
(sync or ``async``) plus its trigger and runtime settings. A handler whose first parameter is annotated
:class:`kawa.ObjectEvent` receives the one S3 record of a bucket notification instead of the CloudEvent.
The same :class:`FunctionSpec` drives every shape: the embedded host, ``kawa worker`` processes on Kafka and
Knative services.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import re
import sys
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from kawa.errors import AppLoadError, FunctionNotFound, InvalidFunction
from kawa.functions.autoscaler import ScalingPolicy
from kawa.functions.filters import EventFilter, TriggerScope
from kawa.functions.types import ObjectEvent

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)
ReplicaMode = Literal["auto", "process", "thread"]
REPLICA_MODES: tuple[str, ...] = ("auto", "process", "thread")

_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
BUCKET_CREATED_FILTER = {"type": {"prefix": "com.amazonaws.s3.ObjectCreated"}}


@dataclass(frozen=True)
class FunctionSpec:
    """Everything the runtime needs to know about one function.

    Delivery: ``retries`` further attempts after the first failure, with exponential backoff from
    ``backoff_s`` (doubling, ±``jitter`` fraction, capped at ``max_backoff_s``); then the event goes to
    ``dead_letter_topic``. ``ordered_by_key``: events with the same record key run one at a time in offset
    order (other keys still run concurrently). Scaling: KPA knobs, see :mod:`kawa.functions.autoscaler`.
    """

    app: str
    name: str
    handler: Handler
    topic: str
    filter: EventFilter
    bucket: str | None = None
    concurrency: int = 4
    min_scale: int = 0
    max_scale: int = 8
    initial_scale: int = 0
    target_utilization: float = 0.7
    stable_window_s: float = 60.0
    panic_window_pct: float = 10.0
    panic_threshold_pct: float = 200.0
    scale_to_zero_grace_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    jitter: float = 0.2
    reply_topic: str | None = None
    dead_letter_topic: str = ""
    ordered_by_key: bool = False
    group: str = ""
    initial_offset: Literal["earliest", "latest"] = "earliest"
    config: Mapping[str, Any] = field(default_factory=dict)
    is_async: bool = False
    replicas: ReplicaMode = "auto"
    scope: TriggerScope = field(default_factory=TriggerScope, compare=False)
    """The buckets the trigger names: S3 events of any other bucket are never handled (see TriggerScope)."""
    outputs: tuple[str, ...] | None = None
    """The topics ``ctx.emit`` may publish to (the reply topic among them); None: not declared, any topic."""
    argument: Literal["event", "object"] = "event"
    """What the handler's first parameter receives: the CloudEvent, or an :class:`ObjectEvent`."""
    app_config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The app's settings (``App(config=...)``), under the function's own in ``ctx.config``."""
    batch: int = 0
    """0: the handler takes one event; N >= 1: it takes a list of up to N events and a
    :class:`~kawa.functions.batch.BatchContext` (see :mod:`kawa.functions.batch`)."""

    @property
    def qualified_name(self) -> str:
        return f"{self.app}.{self.name}"

    def scaling_policy(self) -> ScalingPolicy:
        return ScalingPolicy.for_concurrency(
            self.concurrency,
            self.target_utilization,
            min_scale=self.min_scale,
            max_scale=self.max_scale,
            stable_window_s=self.stable_window_s,
            panic_window_pct=self.panic_window_pct,
            panic_threshold_pct=self.panic_threshold_pct,
            scale_to_zero_grace_s=self.scale_to_zero_grace_s,
        )

    def backoff(self, attempt: int, random: float = 0.5) -> float:
        """Delay before retry number ``attempt`` (1-based); ``random`` in [0, 1) picks the jitter."""
        base = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))
        return max(0.0, min(self.max_backoff_s, base * (1.0 + self.jitter * (2.0 * random - 1.0))))


class App:
    """A named set of functions. ``name`` is a DNS label (it names Kubernetes resources and groups)."""

    def __init__(
        self, name: str, *, config: Mapping[str, Any] | None = None, outputs: Sequence[str] | None = None
    ) -> None:
        if not _NAME.match(name):
            raise InvalidFunction(
                f"app name {name!r} must be 1-40 lowercase letters, digits or '-', starting with a letter"
            )
        self.name = name
        self.config = dict(config or {})
        self.outputs: tuple[str, ...] | None = _topics(outputs, f"app {name!r}")
        """Topics every function of the app may emit to (added to each function's own ``outputs``)."""
        self.functions: dict[str, FunctionSpec] = {}

    def function(
        self,
        *,
        name: str | None = None,
        topic: str | None = None,
        bucket: str | Sequence[str] | None = None,
        filter: Any = None,
        on_foreign: Literal["skip", "dead-letter"] = "skip",
        concurrency: int = 4,
        min_scale: int = 0,
        max_scale: int = 8,
        initial_scale: int = 0,
        target_utilization: float = 0.7,
        stable_window_s: float = 60.0,
        panic_window_pct: float = 10.0,
        panic_threshold_pct: float = 200.0,
        scale_to_zero_grace_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        reply_topic: str | None = None,
        dead_letter_topic: str | None = None,
        ordered_by_key: bool = False,
        group: str | None = None,
        initial_offset: Literal["earliest", "latest"] = "earliest",
        config: Mapping[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
        replicas: ReplicaMode = "auto",
        batch: int = 0,
    ) -> Callable[[F], F]:
        """A decorator that registers a handler. Trigger: ``topic``, or ``bucket`` (one name or several; its
        object notifications are wired to a topic named like the first bucket unless ``topic`` is given;
        without a ``filter`` only ``ObjectCreated`` events reach the handler). The handler acts only on
        records of the buckets named: a record of another bucket on the same topic (Ceph topics may be
        shared, an output bucket among them) is skipped and counted, or dead-lettered with
        ``on_foreign="dead-letter"``. ``outputs`` declares the topics ``ctx.emit`` may publish to (with the
        app's ``outputs`` and the ``reply_topic``); emitting anywhere else is an error. Without any
        declaration every topic is allowed. Annotate the handler's first parameter as
        :class:`kawa.ObjectEvent` to receive the notification's record instead of the CloudEvent. The
        decorated handler is returned unchanged; test it with ``kawa.testing.invoke(handler, event)``.
        ``batch=N``: the handler takes up to N events at once, ``(events, ctx: kawa.BatchContext)``, each still
        committed, deduplicated and dead-lettered on its own (:mod:`kawa.functions.batch`)."""

        def register(fn: F) -> F:
            fname = name or fn.__name__.replace("_", "-").lower()
            if not _NAME.match(fname):
                raise InvalidFunction(
                    f"function name {fname!r} must be 1-40 lowercase letters, digits or '-'; pass name=..."
                )
            if fname in self.functions:
                raise InvalidFunction(f"app {self.name!r} already has a function named {fname!r}")
            buckets = (bucket,) if isinstance(bucket, str) else tuple(bucket or ())
            if not all(isinstance(b, str) and b for b in buckets):
                raise InvalidFunction(f"function {fname!r}: bucket must be a bucket name or a list of them")
            source = topic or (buckets[0] if buckets else None)
            if not source:
                raise InvalidFunction(f"function {fname!r} needs a trigger: topic=... or bucket=...")
            if not callable(fn):
                raise InvalidFunction(f"function {fname!r}: the handler is not callable")
            declared = _declared_outputs(self.outputs, _topics(outputs, f"function {fname!r}"), reply_topic)
            spec = FunctionSpec(
                app=self.name, name=fname, handler=fn, topic=source, bucket=buckets[0] if buckets else None,
                filter=EventFilter(BUCKET_CREATED_FILTER if buckets and filter is None else filter),
                concurrency=concurrency, min_scale=min_scale, max_scale=max_scale, initial_scale=initial_scale,
                target_utilization=target_utilization, stable_window_s=stable_window_s,
                panic_window_pct=panic_window_pct, panic_threshold_pct=panic_threshold_pct,
                scale_to_zero_grace_s=scale_to_zero_grace_s, retries=retries, backoff_s=backoff_s,
                max_backoff_s=max_backoff_s, reply_topic=reply_topic,
                dead_letter_topic=dead_letter_topic or f"{source}.dlq", ordered_by_key=ordered_by_key,
                group=group or f"kawa-fn-{self.name}-{fname}", initial_offset=initial_offset,
                config=dict(config or {}), is_async=inspect.iscoroutinefunction(fn), replicas=replicas,
                scope=TriggerScope(buckets, on_foreign), outputs=declared,
                argument=_argument(fn, fname), app_config=self.config, batch=batch,
            )
            _validate(spec)
            self.functions[fname] = spec
            with contextlib.suppress(TypeError):  # not weakly referable: kawa.testing.invoke needs app.get(name)
                _registered.setdefault(fn, []).append(spec)
            return fn

        return register

    def get(self, name: str) -> FunctionSpec:
        try:
            return self.functions[name]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise FunctionNotFound(f"app {self.name!r} has no function {name!r}; it has: {known}") from None

    def __repr__(self) -> str:
        return f"App({self.name!r}, functions={sorted(self.functions)})"


_registered: weakref.WeakKeyDictionary[Handler, list[FunctionSpec]] = weakref.WeakKeyDictionary()


def spec_of(function: Handler | FunctionSpec) -> FunctionSpec:
    """The :class:`FunctionSpec` of a handler registered with ``@app.function`` (or ``function`` itself)."""
    if isinstance(function, FunctionSpec):
        return function
    try:
        specs = _registered.get(function) or []
    except TypeError:
        specs = []
    if len(specs) == 1:
        return specs[0]
    name = getattr(function, "__name__", type(function).__name__)
    if not specs:
        raise FunctionNotFound(
            f"{name} is not registered as a function; decorate it with @app.function(...) or pass app.get(name)"
        )
    names = ", ".join(s.qualified_name for s in specs)
    raise FunctionNotFound(f"{name} is registered as several functions ({names}); pass app.get(name)")


def _topics(topics: Sequence[str] | None, where: str) -> tuple[str, ...] | None:
    if topics is None:
        return None
    if isinstance(topics, str):
        topics = (topics,)
    out = tuple(topics)
    if not all(isinstance(t, str) and t for t in out):
        raise InvalidFunction(f"{where}: outputs must be a list of topic names, e.g. outputs=('results',)")
    from kawa.log.base import validate_topic_name

    for topic in out:
        try:
            validate_topic_name(topic)
        except Exception as exc:
            raise InvalidFunction(f"{where}: outputs: {exc}") from None
    return out


def _declared_outputs(
    app_outputs: tuple[str, ...] | None, own: tuple[str, ...] | None, reply_topic: str | None
) -> tuple[str, ...] | None:
    if app_outputs is None and own is None:
        return None
    topics = [*(app_outputs or ()), *(own or ()), *((reply_topic,) if reply_topic else ())]
    return tuple(dict.fromkeys(topics))


def _argument(fn: Handler, fname: str) -> Literal["event", "object"]:
    """Whether the handler's first parameter is annotated :class:`ObjectEvent` (read from its type hints)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return "event"
    if not params or params[0].annotation is inspect.Parameter.empty:
        return "event"
    first = params[0]
    annotation: Any = first.annotation
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(fn).get(first.name, annotation)
        except Exception:  # a hint that names something imported only for type checking
            if annotation.rsplit(".", 1)[-1] == "ObjectEvent":
                raise InvalidFunction(
                    f"function {fname!r}: the type hint {annotation!r} of {first.name!r} cannot be resolved; "
                    "import kawa (or ObjectEvent) at run time, not only under TYPE_CHECKING"
                ) from None
            return "event"
    if annotation is ObjectEvent:
        return "object"
    if getattr(annotation, "__name__", None) in ("ObjectEvent", "S3Record"):
        raise InvalidFunction(
            f"function {fname!r}: {first.name!r} is annotated {annotation.__module__}.{annotation.__name__} (a "
            "notification record); a handler takes kawa.ObjectEvent"
        )
    return "event"


def _validate(spec: FunctionSpec) -> None:
    from kawa.log.base import validate_topic_name

    problems = []
    if spec.concurrency < 1:
        problems.append("concurrency must be >= 1")
    if spec.retries < 0:
        problems.append("retries must be >= 0")
    if spec.backoff_s < 0 or spec.max_backoff_s < spec.backoff_s:
        problems.append("need 0 <= backoff_s <= max_backoff_s")
    if spec.initial_scale < 0 or (spec.max_scale and spec.initial_scale > spec.max_scale):
        problems.append("initial_scale must be within 0..max_scale")
    if spec.initial_offset not in ("earliest", "latest"):
        problems.append("initial_offset must be 'earliest' or 'latest'")
    if spec.replicas not in REPLICA_MODES:
        problems.append("replicas must be 'auto', 'process' or 'thread'")
    if spec.batch < 0:
        problems.append("batch must be >= 0 (0: one event per call)")
    if spec.batch and (spec.is_async or spec.argument == "object"):
        problems.append("a batched handler (batch=N) is a sync function taking (events, ctx), not async and not "
                        "an ObjectEvent handler")
    if problems:
        raise InvalidFunction(f"function {spec.qualified_name}: " + "; ".join(problems))
    spec.scaling_policy()  # validates the KPA knobs
    for topic in (spec.topic, spec.dead_letter_topic, spec.reply_topic, *(spec.outputs or ())):
        if topic is not None:
            try:
                validate_topic_name(topic)
            except Exception as exc:
                raise InvalidFunction(f"function {spec.qualified_name}: {exc}") from None


def load_app(ref: str) -> App:
    """Import ``module:attr`` (or ``path/to/file.py:attr``; ``attr`` defaults to ``app``) as an :class:`App`.

    The current directory is put on ``sys.path`` so that ``kawa worker --app myapp:app`` finds a module
    next to where it runs, as ``uvicorn`` does.
    """
    module_name, _, attr = ref.partition(":")
    attr = attr or "app"
    if not module_name:
        raise AppLoadError(f"app reference {ref!r} must look like module:app or path/to/file.py:app")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.is_file():
                raise AppLoadError(f"cannot load {path}: no such Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except AppLoadError:
        raise
    except ImportError as exc:
        raise AppLoadError(
            f"cannot import {module_name!r} for app {ref!r}: {exc}; run from the directory that holds it "
            "or install it in this environment"
        ) from exc
    obj = getattr(module, attr, None)
    if not isinstance(obj, App):
        raise AppLoadError(f"{module_name}:{attr} is {type(obj).__name__}, not a kawa.App")
    return obj
