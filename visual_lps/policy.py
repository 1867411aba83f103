"""A trained agent as a policy for a control loop: numpy observations in, action chunks in the robot's units out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from visual_lps.observations import Nested, map_obs


def make_policy(agent: torch.nn.Module, device: torch.device) -> Callable[[Nested[np.ndarray]], np.ndarray]:
    """observation (numpy, one step) -> action chunk (numpy, (h, action_dim)) with the agent's act()."""

    def policy(observation: Nested[np.ndarray]) -> np.ndarray:
        obs = map_obs(lambda array: torch.as_tensor(array, device=device).unsqueeze(0), observation)
        return agent.act(obs)[0].cpu().numpy()

    return policy
