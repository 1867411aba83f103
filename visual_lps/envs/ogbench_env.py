"""OGBench single-task evaluation environments, the rollout loop (chunks executed by a `ChunkExecutor`), the
evaluator OGBench tasks give the trainer, and their online environment (steps labelled as the play data are)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import gymnasium
import numpy as np
import ogbench.manipspace  # noqa: F401  (registers the environments)
import torch

from visual_lps.data.ogbench_data import task_labels
from visual_lps.deploy.execution import ChunkExecutor
from visual_lps.deploy.policy import Policy
from visual_lps.envs.online import OnlineEnvironment, Transition

ChunkPolicy = Callable[[np.ndarray], np.ndarray]
"""observation -> action chunk (h, action_dim)"""


def make_eval_env(
    env_name: str, render_size: int | None = None, max_episode_steps: int | None = None
) -> gymnasium.Env:
    """The single-task env; with `render_size`, `env.render()` returns square RGB frames of that size;
    `max_episode_steps` overrides the task's time limit (shorter looks at a policy)."""
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    if render_size is not None:
        kwargs |= {"render_mode": "rgb_array", "width": render_size, "height": render_size}
    return gymnasium.make(env_name, **kwargs)


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
    record: str | None = None,
    progress: bool = False,
    executor: ChunkExecutor | None = None,
    record_episodes: int | None = None,
) -> EvalResult:
    """Success rate over `episodes` episodes; success is the env's `info['success']` when the episode ends.

    A policy with a `frame_stack` k > 1 (an agent's, see `visual_lps.deploy.policy`) sees the last k observations (the
    first repeated at the start), as in training. `record` keeps one frame per step: 'render' (the env's camera) or 'observation' (what the
    policy saw), of the first `record_episodes` episodes (default: all).
    """
    from tqdm import trange

    frame_stack = getattr(policy, "frame_stack", 1)
    executor = executor or ChunkExecutor(policy)
    successes, returns, lengths, frames = [], [], [], []
    for episode in trange(episodes, desc="evaluating", unit="ep", disable=not progress, leave=False):
        ob, info = env.reset(seed=seed + episode)
        history = deque([ob] * frame_stack, maxlen=frame_stack)
        executor.reset()
        done, total, length = False, 0.0, 0
        recording = record if record_episodes is None or episode < record_episodes else None
        while not done:
            action = executor(np.stack(history) if frame_stack > 1 else ob)
            ob, reward, terminated, truncated, info = env.step(action)
            history.append(ob)
            done = terminated or truncated
            total += float(reward)
            length += 1
            if recording == "render":
                frames.append(env.render())
            elif recording == "observation":
                frames.append(ob)
        successes.append(float(info["success"]))
        returns.append(total)
        lengths.append(length)
    return EvalResult(float(np.mean(successes)), float(np.mean(returns)), float(np.mean(lengths)), frames)


VIDEO_SIZE = 256
"""pixels of the simulator's view in a state task's evaluation videos"""


class RolloutEvaluator:
    """A task's evaluator during training (`visual_lps.tasks.Evaluator`): the agent's success rate and return
    over the same `episodes` episodes (seeds `seed`, `seed + 1`, ...) each time, in one env made once per run;
    with `videos`, the frames of the first that many episodes (`video_frames`, at `video_fps`): the policy's own
    camera frames when it reads `from_pixels`, else the simulator's view."""

    def __init__(self, env_name: str, episodes: int, device: torch.device, seed: int, progress: bool,
                 videos: int = 0, from_pixels: bool = False):
        self.record = None if not videos else ("observation" if from_pixels else "render")
        self.env = make_eval_env(env_name, render_size=VIDEO_SIZE if self.record == "render" else None)
        self.episodes, self.device, self.seed, self.progress, self.videos = episodes, device, seed, progress, videos
        self.video_frames: list[np.ndarray] = []
        self.video_fps = int(self.env.metadata.get("render_fps", 20))

    def evaluate(self, agent: torch.nn.Module) -> dict[str, float]:
        result = evaluate(Policy(agent, self.device), self.env, self.episodes, seed=self.seed, progress=self.progress,
                          record=self.record, record_episodes=self.videos)
        self.video_frames = result.frames
        return {"eval/success_rate": result.success_rate, "eval/return": result.mean_return}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"success rate {metrics['eval/success_rate']:.2%} over {self.episodes} episodes"


class OGBenchOnlineEnvironment(OnlineEnvironment):
    """The single-task env, its steps labelled as `load_ogbench_task_data` labels the play data: OGBench relabels
    each row with the task reward of the row's own state (its qpos, before the action), so the reward and mask of
    the step taken at s_t are those of s_t, and the reward the simulator returns for that step (of s_{t+1}, the
    state after it) labels the next row. An episode that ends in success ends on a solved state, which bootstraps
    the chunks before it as in the play data."""

    def __init__(self, env_name: str, sparse: bool, max_episode_steps: int | None = None):
        env = make_eval_env(env_name, max_episode_steps=max_episode_steps)
        super().__init__(env, int(env.spec.max_episode_steps))
        self.sparse = sparse
        self._labels = (0.0, 1.0)

    def _label(self, task_reward: float) -> tuple[float, float]:
        reward, mask = task_labels(task_reward, self.sparse)
        return float(reward), float(mask)

    def reset(self, seed: int) -> np.ndarray:
        observation = super().reset(seed)
        self._labels = self._label(self.env.unwrapped.compute_reward())
        return observation

    def step(self, action: np.ndarray) -> Transition:
        transition = super().step(action)
        reward, mask = self._labels
        self._labels = self._label(transition.env_reward)
        return replace(transition, reward=reward, mask=mask)

    def final_labels(self) -> tuple[float, float]:
        return self._labels[0], 1.0
