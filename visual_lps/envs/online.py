"""Acting in a simulator to collect online episodes: the agent's chunks executed open loop (as in evaluation, by the
same `ChunkExecutor`), frame stacks built from the live observations as the sampler builds them from stored
rows (the first observation repeated at an episode's start), every step stored in the replay buffer as it
happens and the finished episode handed back whole, to be written to the run folder.

Rows carry the rewards and masks of the task's offline data (`OnlineEnvironment.step`), so that the critic sees
one reward function offline and online.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium
import numpy as np

from visual_lps.data.chunks import OfflineData
from visual_lps.data.replay import ReplayBuffer
from visual_lps.deploy.execution import ChunkExecutor
from visual_lps.observations import Nested


@dataclass
class Transition:
    """What one environment step gives the buffer and the log."""

    reward: float
    """the reward of the row of the action just taken, as the task's offline data define it"""
    mask: float
    """0 where that row is terminal (no bootstrap past it), else 1"""
    next_observation: Nested[np.ndarray]
    done: bool
    """terminated or truncated: the episode is over"""
    success: bool
    env_reward: float
    """the simulator's own reward, summed into the episode's return as evaluation sums it"""


class EnvironmentFailure(RuntimeError):
    """The simulator raised while resetting or stepping; the message says where."""


class OnlineEnvironment:
    """A gymnasium environment whose steps are labelled as the task labels its data: by default the reward the
    environment returns for the action, and a terminal where it terminates (the usual convention)."""

    def __init__(self, env: gymnasium.Env, max_episode_steps: int):
        self.env = env
        self.max_episode_steps = max_episode_steps

    def reset(self, seed: int) -> Nested[np.ndarray]:
        observation, _ = self.env.reset(seed=seed)
        return observation

    def step(self, action: np.ndarray) -> Transition:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return Transition(float(reward), 0.0 if terminated else 1.0, observation, bool(terminated or truncated),
                          bool(info.get("success", False)), float(reward))

    def final_labels(self) -> tuple[float, float]:
        """(reward, mask) stored with an episode's final observation, a row no chunk steps through"""
        return 0.0, 1.0

    def close(self) -> None:
        self.env.close()


@dataclass
class FinishedEpisode:
    index: int
    """0 for the first online episode of the run"""
    seed: int
    """the environment seed it was reset with"""
    rows: OfflineData
    """its steps and its final observation, as the buffer holds them"""
    success: bool
    env_return: float

    @property
    def length(self) -> int:
        """environment steps"""
        return len(self.rows.actions) - 1


@dataclass
class _Episode:
    """The rows of the episode in progress."""

    seed: int
    observations: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    masks: list = field(default_factory=list)
    env_return: float = 0.0


class OnlineActor:
    """Steps `env` with `policy` (observation, stacked when `frame_stack` > 1 -> chunk), one environment step per
    call, storing each step in `buffer`. Episode i is reset with seed `seed + i`, so a resumed run meets the
    episodes an uninterrupted one would."""

    def __init__(self, env: OnlineEnvironment, policy: Callable[[Nested[np.ndarray]], np.ndarray], frame_stack: int,
                 buffer: ReplayBuffer, seed: int, first_episode: int = 0, explore_noise: float = 0.0,
                 action_bounds: tuple[np.ndarray, np.ndarray] | None = None):
        """`explore_noise`: std of Gaussian noise on each executed action in half ranges of `action_bounds` (low,
        high), clipped to them; drawn from a generator seeded per episode, so a resumed run draws the same."""
        if explore_noise and action_bounds is None:
            raise ValueError("exploration noise needs the action bounds")
        self.env, self.buffer, self.frame_stack, self.seed = env, buffer, frame_stack, seed
        self.explore_noise, self.action_bounds = explore_noise, action_bounds
        self.noise = np.random.default_rng(seed)
        self.executor = ChunkExecutor(policy)
        self.episode_index = first_episode
        self.episode: _Episode | None = None
        self.history: deque = deque(maxlen=frame_stack)
        self.observation: Nested[np.ndarray] | None = None

    @property
    def steps_in_episode(self) -> int:
        return 0 if self.episode is None else len(self.episode.actions)

    def step(self) -> FinishedEpisode | None:
        """One environment step (starting an episode first if none is in progress); the episode when it ended."""
        if self.episode is None:
            self._begin()
        observation = self.observation
        action = np.asarray(self.executor(np.stack(self.history) if self.frame_stack > 1 else observation),
                            dtype=np.float32)
        if self.explore_noise:
            low, high = self.action_bounds
            noisy = action + self.explore_noise * (high - low) / 2 * self.noise.standard_normal(action.shape)
            action = np.clip(noisy, low, high).astype(np.float32)
        try:
            transition = self.env.step(action)
        except Exception as e:  # whatever a simulator raises: the run stops in one line, not deep in MuJoCo
            raise EnvironmentFailure(f"the environment raised at step {self.steps_in_episode + 1} of online episode "
                                     f"{self.episode_index} ({type(e).__name__}: {e})") from e
        self.buffer.add(observation, action, transition.reward, transition.mask)
        episode = self.episode
        for rows, value in ((episode.observations, observation), (episode.actions, action),
                            (episode.rewards, transition.reward), (episode.masks, transition.mask)):
            rows.append(value)
        episode.env_return += transition.env_reward
        self.observation = transition.next_observation
        self.history.append(self.observation)
        if transition.done:
            return self._finish(transition.success)
        return None

    def end_episode(self) -> FinishedEpisode | None:
        """Close the episode in progress where it stands (a truncation: its last observation bootstraps), e.g. at
        the end of the online budget or on a stop signal; None when no step was taken in it."""
        if self.episode is None:
            return None
        if not self.episode.actions:  # reset, but its first step failed
            self.episode = None
            self.buffer.abandon_episode()
            return None
        return self._finish(success=False)

    def _begin(self) -> None:
        seed = self.seed + self.episode_index
        self.episode = _Episode(seed)
        self.noise = np.random.default_rng(seed)
        try:
            self.observation = self.env.reset(seed)
        except Exception as e:
            self.episode = None
            raise EnvironmentFailure(f"the environment raised resetting online episode {self.episode_index} "
                                     f"({type(e).__name__}: {e})") from e
        self.history = deque([self.observation] * self.frame_stack, maxlen=self.frame_stack)
        self.executor.reset()
        self.buffer.begin_episode(self.env.max_episode_steps + 1)

    def _finish(self, success: bool) -> FinishedEpisode:
        episode = self.episode
        reward, mask = self.env.final_labels()
        self.buffer.end_episode(self.observation, reward, mask)
        observations = [*episode.observations, self.observation]
        rows = OfflineData(
            observations=_stack(observations),
            actions=np.stack([*episode.actions, np.zeros_like(episode.actions[0])]),
            rewards=np.array([*episode.rewards, reward], np.float32),
            masks=np.array([*episode.masks, mask], np.float32),
            episode_ends=np.arange(len(observations)) == len(observations) - 1,
        )
        finished = FinishedEpisode(self.episode_index, episode.seed, rows, success, episode.env_return)
        self.episode = None
        self.episode_index += 1
        return finished


def _stack(observations: list[Nested[np.ndarray]]) -> Nested[np.ndarray]:
    """Per-step observations -> one array per key, rows first."""
    first = observations[0]
    if isinstance(first, dict):
        return {key: np.stack([o[key] for o in observations]) for key in first}
    return np.stack(observations)
