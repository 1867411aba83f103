"""A one-step bandit task for the online phase: the offline data only ever show actions whose first coordinate lies
in [-1, 0], none of which pays more than SLOPE (a little more the larger it is); a first coordinate above PAYING
pays 1 more.  Offline training cannot find it; online interaction (with exploration noise)
can. The public LPS code ships bandits of this kind (its envs/bandit_utils.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from visual_lps.data.chunks import OfflineData
from visual_lps.deploy.policy import Policy
from visual_lps.envs.online import OnlineEnvironment
from visual_lps.tasks import TaskData

PAYING = 0.1
"""actions whose first coordinate is above this pay 1; the offline data's lie in [-1, 0]"""
SLOPE = 0.5
"""the reward rises from 0 to SLOPE as the first coordinate goes from -1 to 1: offline, the policy learns to go to
the edge of the data, where exploration can find what pays"""
ACTION_DIM = 3
"""the first coordinate pays; the others are free (a latent sphere of a few dimensions has no local optima to trap the
actor, as a circle has)"""
START, END = np.zeros(2, np.float32), np.ones(2, np.float32)


class BanditEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        return START.copy(), {}

    def step(self, action):
        first = float(np.asarray(action).reshape(-1)[0])
        return END.copy(), reward(first), True, False, {"success": first > PAYING}


def reward(first: float | np.ndarray) -> float | np.ndarray:
    return SLOPE * (first + 1.0) / 2.0 + (first > PAYING)


def offline_data(episodes: int, seed: int = 0) -> OfflineData:
    """Each episode: the start row (an action in [-1, 0], reward 0, terminal) and the final observation row."""
    rng = np.random.default_rng(seed)
    actions = np.zeros((2 * episodes, ACTION_DIM), np.float32)
    actions[0::2, 0] = rng.uniform(-1.0, 0.0, episodes)
    actions[0::2, 1:] = rng.uniform(-1.0, 1.0, (episodes, ACTION_DIM - 1))
    observations = np.tile(np.stack([START, END]), (episodes, 1))
    masks = np.tile(np.array([0.0, 1.0], np.float32), episodes)
    rewards = np.zeros(2 * episodes, np.float32)
    rewards[0::2] = reward(actions[0::2, 0])
    return OfflineData(observations, actions, rewards, masks,
                       np.tile(np.array([False, True]), episodes))


@dataclass
class BanditEvaluator:
    episodes: int = 50

    def evaluate(self, agent) -> dict[str, float]:
        policy, env = Policy(agent, "cpu"), BanditEnv()
        steps = [env.step(policy(env.reset(seed=i)[0])[0]) for i in range(self.episodes)]
        return {"eval/success_rate": float(np.mean([step[4]["success"] for step in steps])),
                "eval/return": float(np.mean([step[1] for step in steps]))}

    def describe(self, metrics: dict[str, float]) -> str:
        return f"success rate {metrics['eval/success_rate']:.2%}"


@dataclass(frozen=True)
class BanditTask:
    """The task protocol of `visual_lps.tasks`, for the bandit."""

    name: str = "bandit"
    from_pixels: bool = False
    config_path: Path | None = None
    has_simulator: bool = True

    def defaults(self) -> dict[str, dict[str, Any]]:
        return {"train": {}, "agent": {"horizon": 1}}

    def describe(self, train_cfg) -> str:
        return self.name

    def load(self, train_cfg, announce: bool, share=None) -> TaskData:
        return TaskData(offline_data(200), None, Path("bandit"), None)

    def prepare_agent(self, agent, data: TaskData) -> None:
        """Actions already lie in [-1, 1]."""

    def make_evaluator(self, train_cfg, data, needs, device) -> BanditEvaluator:
        return BanditEvaluator()

    def make_online_environment(self, train_cfg, data) -> OnlineEnvironment:
        return OnlineEnvironment(BanditEnv(), max_episode_steps=1)
