"""The action-space critic: an ensemble of Q(s, a_chunk) networks, scored as one batched matmul."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visual_lps.nn.mlp import EnsembleMLP


class CriticEnsemble(nn.Module):
    """Q_i(s, a) for i < num_members on state features and a flattened action chunk; returns (E, B)."""

    def __init__(
        self,
        feature_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int],
        num_members: int,
        layer_norm: bool,
    ):
        """No defaults here: they come from the agent's config (`CriticConfig`, which a task's defaults and flags
        may override)."""
        super().__init__()
        self.num_members = num_members
        self.net = EnsembleMLP(num_members, feature_dim + action_dim, hidden_dims, 1, layer_norm=layer_norm)

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, actions], dim=-1)).squeeze(-1)
