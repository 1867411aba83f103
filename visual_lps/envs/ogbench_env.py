"""OGBench single-task evaluation environments and the rollout loop (action chunks run open loop)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium
import numpy as np

import ogbench.manipspace  # noqa: F401  (registers the environments)

ChunkPolicy = Callable[[np.ndarray], np.ndarray]
"""observation -> action chunk (h, action_dim)"""


def make_eval_env(env_name: str, render_size: int | None = None) -> gymnasium.Env:
    """The single-task env; with `render_size`, `env.render()` returns square RGB frames of that size."""
    if render_size is None:
        return gymnasium.make(env_name)
    return gymnasium.make(env_name, render_mode="rgb_array", width=render_size, height=render_size)


@dataclass
class EvalResult:
    success_rate: float
    mean_return: float
    mean_length: float
    frames: list[np.ndarray]


def evaluate(
    policy: ChunkPolicy,
    env: gymnasium.Env,
    episodes: int,
    seed: int = 0,
    record_frames: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Success rate over `episodes` episodes; success is the env's `info['success']` when the episode ends."""
    from tqdm import trange

    successes, returns, lengths, frames = [], [], [], []
    for episode in trange(episodes, desc="evaluating", unit="ep", disable=not progress, leave=False):
        ob, info = env.reset(seed=seed + episode)
        done, total, length, queue = False, 0.0, 0, []
        while not done:
            if not queue:
                queue = list(policy(ob))
            ob, reward, terminated, truncated, info = env.step(queue.pop(0))
            done = terminated or truncated
            total += float(reward)
            length += 1
            if record_frames:
                frames.append(env.render())
        successes.append(float(info["success"]))
        returns.append(total)
        lengths.append(length)
    return EvalResult(float(np.mean(successes)), float(np.mean(returns)), float(np.mean(lengths)), frames)
