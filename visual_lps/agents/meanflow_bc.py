"""MeanFlow BC: the one-step MeanFlow prior alone (behaviour cloning), acting from uniform noise on the sphere.

LPS's starting point (the public code's `agents/meanflow.py`): LPS keeps this prior and steers the noise it
decodes. No critic: the prior's loss alone trains it and the shared encoder. `MeanFlowFields` are the prior's
fields, which LPS (and DSRL over a MeanFlow prior) take as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visual_lps.agents.base import AgentConfig, Batch, ChunkedAgent, Features
from visual_lps.nn.meanflow import MeanFlowPrior
from visual_lps.observations import ObsSpec


@dataclass
class MeanFlowFields:
    """The MeanFlow prior's fields (state OGBench defaults, from the paper and its public reference code)."""

    prior_hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """hidden widths of the MeanFlow prior MLP (GELU)"""
    t_mean: float = -0.4
    """mean of the logit-normal distribution of the MeanFlow times t, r"""
    t_std: float = 1.0
    """standard deviation of the logit-normal distribution of t, r"""
    flow_ratio: float = 0.75
    """fraction of each batch trained with r = t (plain flow matching)"""
    adaptive_loss_power: float = 0.5
    """power p of the adaptive loss weight 1 / (err^2 + c)^p"""
    adaptive_loss_eps: float = 1e-3
    """constant c of the adaptive loss weight"""

    def meanflow_ranges(self) -> dict[str, tuple[bool, str]]:
        return {
            "prior_hidden_dims": (all(w >= 1 for w in self.prior_hidden_dims), "widths of at least 1"),
            "t_std": (self.t_std > 0.0, "positive"),
            "flow_ratio": (0.0 <= self.flow_ratio <= 1.0, "in [0, 1]"),
            "adaptive_loss_power": (self.adaptive_loss_power >= 0.0, "at least 0"),
            "adaptive_loss_eps": (self.adaptive_loss_eps > 0.0, "positive"),
        }

    def build_meanflow_prior(self, feature_dim: int, chunk_dim: int) -> MeanFlowPrior:
        return MeanFlowPrior(feature_dim, chunk_dim, self.prior_hidden_dims, t_mean=self.t_mean, t_std=self.t_std,
                             flow_ratio=self.flow_ratio, loss_power=self.adaptive_loss_power,
                             loss_eps=self.adaptive_loss_eps)


@dataclass
class MeanFlowBCConfig(AgentConfig, MeanFlowFields):
    """The common fields and the MeanFlow prior's."""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | self.meanflow_ranges()


class MeanFlowBCAgent(ChunkedAgent):
    """The prior alone: act(s) = g(s, eps), eps uniform on the sphere."""

    roles = ("prior",)
    encoder_trained_by = ("prior",)
    progress_metrics = ("prior/loss",)
    noise_modules = ("prior",)

    def __init__(self, config: MeanFlowBCConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        self.prior = config.build_meanflow_prior(self.feature_dim, self.chunk_dim)

    def policy_actions(self, features: Features) -> torch.Tensor:
        noise = self.prior.sample_noise(features["prior"].shape[0], features["prior"].device)
        return self.prior.sample(features["prior"], noise)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, _ = self.encode_transition(batch)
        return self.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])
