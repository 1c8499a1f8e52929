"""``kawa up``'s loop service: every ``loop.interval_s`` it steps one :class:`LoopController` per policy in
``loop.policies``, one :class:`~kawa.monitor.service.MonitorService` per entry of ``loop.monitors`` (its alerts
are what the loops react to) and one :class:`~kawa.evaluation.service.Evaluator` per running experiment that no
loop owns (a loop evaluates its own canaries), so alerts, decisions, evaluations and promotions happen with no
other command.

One process must own an experiment's evaluation and a model's loop at a time (their records are replayed on
start): run ``kawa up`` once per log, or ``kawa loop run`` / ``kawa experiments evaluate`` by hand instead.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kawa.evaluation.service import Evaluator
    from kawa.ml.registry import Registry
    from kawa.monitor.service import MonitorService
    from kawa.platform import Platform
    from kawa.retrain.controller import LoopController

log = logging.getLogger("kawa.retrain.service")


class LoopService:
    name = "loop"

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.interval_s = platform.config.loop.interval_s
        self.controllers: dict[str, LoopController] = {}
        self.evaluators: dict[str, Evaluator] = {}
        self.monitors: dict[str, MonitorService] = {}
        self._registry: Registry | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kawa-loop", daemon=True)
        self.steps = 0

    def start(self) -> None:
        from kawa.retrain.controller import LoopController
        from kawa.retrain.policy import LoopPolicy

        for data in self.platform.config.loop.policies:
            policy = LoopPolicy.from_dict(data)  # an invalid policy stops `kawa up` with the field to fix
            self.controllers[policy.model] = LoopController(self.platform.config, self.platform.log, policy).start()
        for data in self.platform.config.loop.monitors:
            self._monitor(data)
        self._thread.start()

    def _monitor(self, data: dict[str, Any]) -> None:
        from kawa.errors import ConfigError
        from kawa.ml.registry import Registry
        from kawa.monitor.join import JoinConfig
        from kawa.monitor.profiles import NoReferenceProfile, load_reference_profile
        from kawa.monitor.service import MonitorConfig, MonitorService

        values = dict(data)
        if isinstance(values.get("join"), dict):
            values["join"] = JoinConfig(**values["join"])
        try:
            config = MonitorConfig(**values)
        except TypeError as exc:
            raise ConfigError(
                f"loop.monitors: {exc}; the fields are those of kawa.monitor.service.MonitorConfig"
            ) from None
        if self._registry is None:
            self._registry = Registry(self.platform.config, publish=False)
        registry = self._registry

        def profiles(version: int) -> Any:
            try:
                return load_reference_profile(registry, config.model, version)
            except NoReferenceProfile as exc:
                log.warning("%s; its decisions are counted, not tested", exc)
                return None

        self.monitors[config.model] = MonitorService(self.platform.log, config, profiles).start()

    def step(self) -> None:
        for model, monitor in self.monitors.items():  # first: the loops see the alerts of this step
            try:
                monitor.step()
            except Exception:
                log.exception("monitoring %s failed a step; it goes on at the next", model)
        for model, controller in self.controllers.items():
            try:
                controller.step()
            except Exception:
                log.exception("the loop of %s failed a step; it resumes from its records at the next", model)
        if self.platform.config.loop.evaluate:
            self._evaluate()
        self.steps += 1

    def _evaluate(self) -> None:
        from kawa.errors import TopicNotFound
        from kawa.evaluation.experiments import EXPERIMENTS_TOPIC, ExperimentStore
        from kawa.evaluation.service import Evaluator

        try:
            self.platform.log.describe_topic(EXPERIMENTS_TOPIC)
        except TopicNotFound:
            return  # no experiment was ever created on this log: nothing to read, and no topic to create
        owned = tuple(f"{model}-{phase}-v" for model in self.controllers for phase in ("canary", "shadow"))
        for state in ExperimentStore(self.platform.log).list():
            if not state.running or state.name.startswith(owned):
                continue
            evaluator = self.evaluators.get(state.name)
            try:
                if evaluator is None:
                    evaluator = self.evaluators[state.name] = Evaluator(self.platform.log, state.name).start()
                evaluator.step()
            except Exception:
                log.exception("evaluating experiment %s failed; it is retried at the next step", state.name)
        for name in [n for n, ev in self.evaluators.items() if ev.decision is not None]:
            self.evaluators.pop(name).close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.step()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for monitor in self.monitors.values():
            monitor.close()
        for controller in self.controllers.values():
            controller.close()
        if self._registry is not None:
            self._registry.close()
        for evaluator in self.evaluators.values():
            evaluator.close()


def build_service(platform: Platform) -> LoopService | None:
    """The loop service when a policy is configured or experiments are to be evaluated."""
    loop = platform.config.loop
    if not loop.policies and not loop.monitors and not loop.evaluate:
        return None
    return LoopService(platform)
