"""``kawa up``'s loop service: every ``loop.interval_s`` it steps one :class:`LoopController` per policy in
``loop.policies`` and one :class:`~kawa.evaluation.service.Evaluator` per running experiment that no loop owns
(a loop evaluates its own canaries), so decisions, evaluations and promotions happen with no other command.

One process must own an experiment's evaluation and a model's loop at a time (their records are replayed on
start): run ``kawa up`` once per log, or ``kawa loop run`` / ``kawa experiments evaluate`` by hand instead.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kawa.evaluation.service import Evaluator
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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kawa-loop", daemon=True)
        self.steps = 0

    def start(self) -> None:
        from kawa.retrain.controller import LoopController
        from kawa.retrain.policy import LoopPolicy

        for data in self.platform.config.loop.policies:
            policy = LoopPolicy.from_dict(data)  # an invalid policy stops `kawa up` with the field to fix
            self.controllers[policy.model] = LoopController(self.platform.config, self.platform.log, policy).start()
        self._thread.start()

    def step(self) -> None:
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
        owned = tuple(f"{model}-canary-v" for model in self.controllers)
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
        for controller in self.controllers.values():
            controller.close()
        for evaluator in self.evaluators.values():
            evaluator.close()


def build_service(platform: Platform) -> LoopService | None:
    """The loop service when a policy is configured or experiments are to be evaluated."""
    loop = platform.config.loop
    if not loop.policies and not loop.evaluate:
        return None
    return LoopService(platform)
