"""A pure autoscaler modelled on Knative's KPA (Knative Pod Autoscaler).

The host feeds it samples of *observed concurrency* (invocations running plus events waiting for a free
slot) and asks it for the desired replica count. It holds no clock and does no I/O: the same inputs give
the same decisions, which is what lets tests drive it with synthetic traces.

The algorithm follows ``knative.dev/serving/pkg/autoscaler/scaling/autoscaler.go``:

- ``stable`` = mean concurrency over the stable window (default 60 s), ``panic`` = mean over the panic
  window (default 10 % of the stable window).
- Desired replicas from each: ``ceil(value / target)``, bounded by the rate limits (at most
  ``max_scale_up_rate * ready`` up, at least ``ready / max_scale_down_rate`` down).
- Panic starts when ``panic / target / max(ready, 1) >= panic_threshold`` (default 200 %) and lasts until
  the load has stayed below that for a whole stable window. While panicking the count never goes down.
- The result is clamped to ``[min_scale, max_scale]`` (``max_scale`` 0 = unlimited).

Two rules that Knative implements outside the decider (activator, scale-to-zero grace) live here too:

- **Scale from zero:** when nothing is running and the latest sample shows demand, at least one replica
  is wanted at once, whatever the windows say.
- **Scale to zero** only after ``scale_to_zero_grace_s`` without any demand (and only when the stable
  window itself has emptied, i.e. after ``max(stable window, grace)`` of silence).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from kawa.errors import InvalidFunction


@dataclass(frozen=True)
class ScalingPolicy:
    """The knobs, with Knative's defaults. ``target`` is the concurrency one replica should carry."""

    target: float
    min_scale: int = 0
    max_scale: int = 0
    stable_window_s: float = 60.0
    panic_window_pct: float = 10.0
    panic_threshold_pct: float = 200.0
    scale_to_zero_grace_s: float = 30.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0

    def __post_init__(self) -> None:
        problems = []
        if not self.target > 0:
            problems.append(f"target must be > 0, got {self.target}")
        if self.min_scale < 0 or self.max_scale < 0:
            problems.append("min_scale and max_scale must be >= 0 (max_scale 0 = unlimited)")
        if self.max_scale and self.max_scale < self.min_scale:
            problems.append(f"max_scale {self.max_scale} is below min_scale {self.min_scale}")
        if not self.stable_window_s > 0:
            problems.append("stable_window_s must be > 0")
        if not 1.0 <= self.panic_window_pct <= 100.0:
            problems.append("panic_window_pct must be within 1..100")
        if not self.panic_threshold_pct > 100.0:
            problems.append("panic_threshold_pct must be > 100 (Knative allows 110..1000)")
        if self.scale_to_zero_grace_s < 0:
            problems.append("scale_to_zero_grace_s must be >= 0")
        if not (self.max_scale_up_rate > 1.0 and self.max_scale_down_rate > 1.0):
            problems.append("max_scale_up_rate and max_scale_down_rate must be > 1")
        if problems:
            raise InvalidFunction("invalid scaling policy: " + "; ".join(problems))

    @classmethod
    def for_concurrency(cls, concurrency: int, target_utilization: float = 0.7, **knobs: float) -> ScalingPolicy:
        """A policy whose target is ``concurrency * target_utilization`` (Knative's default target)."""
        if not 0.0 < target_utilization <= 1.0:
            raise InvalidFunction(f"target_utilization must be within (0, 1], got {target_utilization}")
        return cls(target=max(concurrency * target_utilization, 0.01), **knobs)  # type: ignore[arg-type]

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_pct / 100.0

    def clamp(self, replicas: int) -> int:
        replicas = max(replicas, self.min_scale)
        return min(replicas, self.max_scale) if self.max_scale else replicas


@dataclass(frozen=True)
class Decision:
    desired: int
    panicking: bool
    stable_concurrency: float
    panic_concurrency: float


class KPA:
    """The decider. Call :meth:`record` with each sample, then :meth:`decide` (times in seconds, any epoch,
    non-decreasing)."""

    def __init__(self, policy: ScalingPolicy) -> None:
        self.policy = policy
        self._samples: deque[tuple[float, float]] = deque()
        self._panic_time: float | None = None
        self._max_panic: int = 0
        self._last_active: float | None = None
        self._latest: float = 0.0

    @property
    def panicking(self) -> bool:
        return self._panic_time is not None

    def record(self, now: float, concurrency: float) -> None:
        concurrency = max(0.0, float(concurrency))
        self._samples.append((now, concurrency))
        self._latest = concurrency
        if concurrency > 0:
            self._last_active = now
        horizon = now - self.policy.stable_window_s
        while self._samples and self._samples[0][0] <= horizon:
            self._samples.popleft()

    def _mean(self, now: float, window: float) -> float | None:
        total, count = 0.0, 0
        start = now - window
        for t, v in reversed(self._samples):
            if t <= start:
                break
            total += v
            count += 1
        return total / count if count else None

    def decide(self, now: float, ready: int) -> Decision:
        """The replica count wanted now, given ``ready`` replicas running."""
        p = self.policy
        stable = self._mean(now, p.stable_window_s) or 0.0
        panic = self._mean(now, p.panic_window_s)
        if panic is None:  # sparse samples: the newest one is the best estimate of the last instant
            panic = self._latest if self._samples else 0.0
        ready_count = max(1, ready)
        max_up = math.ceil(p.max_scale_up_rate * ready_count)
        max_down = math.floor(ready_count / p.max_scale_down_rate)
        stable_pods = min(max(_pods(stable, p.target), max_down), max_up)
        panic_pods = min(max(_pods(panic, p.target), max_down), max_up)
        over = (panic / p.target) / ready_count >= p.panic_threshold_pct / 100.0

        if over:
            self._panic_time = now
        elif self._panic_time is not None and now - self._panic_time >= p.stable_window_s:
            self._panic_time = None
            self._max_panic = 0

        desired = stable_pods
        if self._panic_time is not None:
            desired = max(desired, panic_pods, self._max_panic)
            self._max_panic = desired
        if self._latest > 0 and ready == 0:
            desired = max(desired, 1)  # scale from zero on the first event
        recently_active = self._last_active is not None and now - self._last_active < p.scale_to_zero_grace_s
        if desired == 0 and ready > 0 and recently_active:
            desired = 1
        desired = p.clamp(desired)
        if self._panic_time is not None:
            self._max_panic = max(self._max_panic, desired)
        return Decision(desired, self._panic_time is not None, stable, panic)


def _pods(concurrency: float, target: float) -> int:
    """``ceil(concurrency / target)``, tolerant of float noise, and at least 1 for any demand."""
    if concurrency <= 0:
        return 0
    return max(1, math.ceil(concurrency / target - 1e-9))
