"""The toy problem every agent is checked on: one-step episodes from a constant state, logged 2-D actions from
two modes of which one, off the data's centre, pays 1. An agent that maximises Q inside the support picks the
paying mode; behaviour cloning reproduces both. (2-D because the noise sphere of a 1-D action is {-1, +1}.)"""

from __future__ import annotations

import numpy as np
import torch

from visual_lps.data.chunks import ChunkSampler, DataNeeds, OfflineData

MODES = np.array([[-0.5, 0.3], [0.6, -0.4]], np.float32)
GOOD = 1  # the second mode pays 1, the first 0; the data's mean lies between them, near neither
SPREAD = 0.05  # standard deviation of the logged actions around their mode


def two_mode_bandit(episodes: int = 600, seed: int = 0) -> OfflineData:
    rng = np.random.default_rng(seed)
    mode = rng.integers(0, 2, episodes)
    first = MODES[mode] + rng.normal(0, SPREAD, (episodes, 2))
    actions = np.stack([first, np.zeros((episodes, 2))], axis=1).reshape(-1, 2).astype(np.float32)
    rewards = np.stack([mode == GOOD, np.zeros(episodes)], axis=1).reshape(-1).astype(np.float32)
    return OfflineData(
        observations=np.ones((2 * episodes, 1), np.float32),
        actions=actions,
        rewards=rewards,
        masks=np.zeros(2 * episodes, np.float32),  # terminal after one step: nothing to bootstrap
        episode_ends=np.tile([False, True], episodes),
    )


def train_on_toy(agent: torch.nn.Module, data: OfflineData, seed: int, steps: int, batch_size: int = 128) -> None:
    """Plain training (forward, backward, Adam, targets) on the toy data, as the trainer's update does."""
    sampler = ChunkSampler(data, DataNeeds(1), device="cpu", seed=seed, draw_random=agent.draw_random_inputs)
    optimizer = torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        loss, _ = agent(sampler.sample(batch_size))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        agent.update_targets()


def nearest_mode(actions: torch.Tensor) -> torch.Tensor:
    return torch.cdist(actions.reshape(-1, 2), torch.as_tensor(MODES)).argmin(dim=1)


def distance_to_data(actions: torch.Tensor, data: OfflineData, paying_only: bool = False) -> torch.Tensor:
    """Each action's distance to the nearest logged first-step action (of the paying mode only, if asked)."""
    logged = data.actions[::2]
    if paying_only:
        logged = logged[data.rewards[::2] > 0]
    return torch.cdist(actions.reshape(-1, 2), torch.as_tensor(logged)).min(dim=1).values


def assert_picks_the_paying_mode_inside_the_support(agent: torch.nn.Module, data: OfflineData) -> None:
    """One state, one deterministic chunk: in the paying mode and next to paying actions the data contain."""
    action = agent.act(torch.ones(1, 1)).view(1, 2)
    assert nearest_mode(action).item() == GOOD, f"{type(agent).__name__} chose {action.tolist()}"
    gap = distance_to_data(action, data, paying_only=True).item()
    assert gap < 4 * SPREAD, f"action {action.tolist()} is {gap:.2f} away from every logged paying action"


def assert_reproduces_both_modes(actions: torch.Tensor, data: OfflineData) -> None:
    """Samples of a behaviour-cloning policy: each mode about as often as in the data, all near the data."""
    share = (nearest_mode(actions) == GOOD).float().mean().item()
    logged_share = float((data.rewards[::2] > 0).mean())
    assert abs(share - logged_share) < 0.15, f"{share:.0%} of samples in the paying mode, data {logged_share:.0%}"
    far = (distance_to_data(actions, data) > 4 * SPREAD).float().mean().item()
    assert far < 0.2, f"{far:.0%} of the samples lie off the data's support"
