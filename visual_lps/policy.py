"""A trained agent as a policy for a control loop: numpy observations in, action chunks in the robot's units out."""

from __future__ import annotations

import numpy as np
import torch

from visual_lps.observations import Nested, map_obs


class AgentPolicy:
    """observation (numpy, one step, or the last `frame_stack` steps stacked) -> action chunk (numpy,
    (h, action_dim)) with the agent's act(); `frame_stack` is what the agent declared it reads."""

    def __init__(self, agent: torch.nn.Module, device: torch.device):
        self.agent, self.device = agent, device
        self.frame_stack = agent.data_needs.frame_stack

    def __call__(self, observation: Nested[np.ndarray]) -> np.ndarray:
        obs = map_obs(lambda array: torch.as_tensor(array, device=self.device).unsqueeze(0), observation)
        return self.agent.act(obs)[0].cpu().numpy()


def make_policy(agent: torch.nn.Module, device: torch.device) -> AgentPolicy:
    return AgentPolicy(agent, device)
