"""Flow BC: a multi-step flow-matching policy alone (behaviour cloning), integrated from Gaussian noise in
`flow_steps` Euler steps: the public code's `agents/flow.py` (4 x 512 MLP, uniform times, 10 steps, N(0, I)
noise). `FlowFields` are that policy's fields, which QC-FQL and DSRL take as they are.

No critic: the flow-matching loss alone trains the policy and the shared encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visual_lps.agents.base import AgentConfig, Batch, ChunkedAgent, Features
from visual_lps.nn.flow_policy import FlowPolicy
from visual_lps.observations import ObsSpec


@dataclass
class FlowFields:
    """The flow-matching BC policy's fields (the public code's defaults)."""

    bc_flow_hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """hidden widths of the flow-matching BC policy MLP"""
    flow_steps: int = 10
    """Euler steps when the BC flow is sampled"""

    def flow_ranges(self) -> dict[str, tuple[bool, str]]:
        return {
            "bc_flow_hidden_dims": (all(w >= 1 for w in self.bc_flow_hidden_dims), "widths of at least 1"),
            "flow_steps": (self.flow_steps >= 1, "at least 1"),
        }

    def build_flow_policy(self, feature_dim: int, chunk_dim: int, noise: str) -> FlowPolicy:
        return FlowPolicy(feature_dim, chunk_dim, self.bc_flow_hidden_dims, self.flow_steps, noise=noise)


@dataclass
class FlowBCConfig(AgentConfig, FlowFields):
    """The common fields and the flow policy's."""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | self.flow_ranges()


class FlowBCAgent(ChunkedAgent):
    """The flow policy alone: act(s) = flow(s, x_0), x_0 ~ N(0, I), in `flow_steps` Euler steps."""

    roles = ("bc_flow",)
    encoder_trained_by = ("bc_flow",)
    progress_metrics = ("bc_flow/loss",)
    noise_modules = ("bc_flow",)

    def __init__(self, config: FlowBCConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        self.bc_flow = config.build_flow_policy(self.feature_dim, self.chunk_dim, noise="normal")

    def policy_actions(self, features: Features) -> torch.Tensor:
        noise = self.bc_flow.sample_noise(features["bc_flow"].shape[0], features["bc_flow"].device)
        return self.bc_flow.sample(features["bc_flow"], noise)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, _ = self.encode_transition(batch)
        return self.bc_flow.loss(features["bc_flow"], batch["actions"].flatten(1), batch["random"]["bc_flow"])
