"""How a chunk of actions reaches the robot, one action per control step; evaluation and robot loops share it.

- `open-loop`: run each chunk to its end, then ask for the next (the paper's choice, and the default);
- `replan`: ask for a new chunk every `replan_every` steps, dropping the rest of the old one;
- `ensemble`: ask at every step and average, for each step, every chunk's prediction of it, the older ones
  weighing more: w_i = exp(-decay * i), i = 0 for the oldest (ACT's temporal ensembling).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

MODES = ("open-loop", "replan", "ensemble")


class ChunkExecutor:
    def __init__(self, policy: Callable[[Any], np.ndarray], mode: str = "open-loop", replan_every: int = 1,
                 decay: float = 0.01):
        """`policy`: observation -> chunk (horizon, action_dim)."""
        if mode not in MODES:
            raise ValueError(f"execution mode {mode!r}: choose one of {', '.join(MODES)}")
        if replan_every < 1:
            raise ValueError(f"replan_every must be at least 1, got {replan_every}")
        if decay < 0:
            raise ValueError(f"ensemble decay must be at least 0, got {decay}")
        self.policy, self.mode, self.replan_every, self.decay = policy, mode, replan_every, decay
        self.reset()

    def reset(self) -> None:
        """Forget every chunk (at the start of an episode)."""
        self.queue: deque[np.ndarray] = deque()
        self.since_plan = 0
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (step it was asked at, chunk), oldest first
        self.step_count = 0

    def __call__(self, observation: Any) -> np.ndarray:
        """The action to execute now."""
        if self.mode == "ensemble":
            return self._ensemble(observation)
        if not self.queue or (self.mode == "replan" and self.since_plan >= self.replan_every):
            self.queue = deque(self.policy(observation))
            self.since_plan = 0
        self.since_plan += 1
        return self.queue.popleft()

    def _ensemble(self, observation: Any) -> np.ndarray:
        now = self.step_count
        self.step_count += 1
        self.chunks.append((now, np.asarray(self.policy(observation))))
        while self.chunks and now - self.chunks[0][0] >= len(self.chunks[0][1]):
            self.chunks.popleft()  # it has no prediction for this step any more
        predictions = np.stack([chunk[now - asked] for asked, chunk in self.chunks])
        weights = np.exp(-self.decay * np.arange(len(predictions)))
        return (weights[:, None] * predictions).sum(axis=0) / weights.sum()


class ControlClock:
    """Steady control periods for a robot loop: `wait()` at the end of each step sleeps to the next period; a step
    that overran it counts as late and the clock restarts from now (a robot wants steady periods rather than a
    burst of catching up)."""

    def __init__(self, rate_hz: float):
        if rate_hz <= 0:
            raise ValueError(f"control rate must be positive, got {rate_hz}")
        self.period, self.late = 1.0 / rate_hz, 0
        self.restart()

    def restart(self) -> None:
        """Count periods from now (at an episode's start)."""
        self.next_tick = time.perf_counter()

    def wait(self) -> None:
        self.next_tick += self.period
        remaining = self.next_tick - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)
        else:
            self.late += 1
            self.next_tick = time.perf_counter()
