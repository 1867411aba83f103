"""The latent actor pi(z|s): a deterministic MLP whose output is projected onto the prior's noise sphere."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visual_lps.nn.mlp import MLP
from visual_lps.nn.sphere import project_to_sphere


class LatentActor(nn.Module):
    """Chooses which noise the prior decodes: no tanh, the projection alone bounds the latent."""

    def __init__(self, feature_dim: int, latent_dim: int, hidden_dims: Sequence[int]):
        super().__init__()
        self.net = MLP(feature_dim, hidden_dims, latent_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return project_to_sphere(self.net(features))
