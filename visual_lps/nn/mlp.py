"""Multi-layer perceptrons: a plain one and a critic ensemble evaluated as one batched matmul."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _xavier_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer initialised like the JAX reference (Xavier-uniform weights, zero bias)."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """Linear -> GELU (-> LayerNorm) blocks followed by a linear output layer."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, layer_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for width in hidden_dims:
            layers += [_xavier_linear(dim, width), nn.GELU()]
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            dim = width
        layers.append(_xavier_linear(dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EnsembleLinear(nn.Module):
    """`num_members` independent linear layers stored as one stacked weight, so the ensemble costs one bmm."""

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        weight = torch.empty(num_members, in_features, out_features)
        for member in weight:
            nn.init.xavier_uniform_(member.T)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in) shared by all members, or (E, B, in) per member; returns (E, B, out)."""
        num_members, in_features, out_features = self.weight.shape
        if x.dim() == 2:
            # One wide matmul against the members' weights laid side by side.
            flat = self.weight.permute(1, 0, 2).reshape(in_features, num_members * out_features)
            out = torch.addmm(self.bias.view(-1), x, flat)
            return out.view(x.shape[0], num_members, out_features).transpose(0, 1)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """An ensemble of MLPs with the same architecture as `MLP`, one output per member: (E, B, out)."""

    def __init__(
        self,
        num_members: int,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        layer_norm: bool = True,
    ):
        super().__init__()
        self.layer_norm = layer_norm
        dims = [in_dim, *hidden_dims]
        self.hidden = nn.ModuleList(EnsembleLinear(num_members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        if layer_norm:
            self.norm_scale = nn.ParameterList(nn.Parameter(torch.ones(num_members, 1, w)) for w in hidden_dims)
            self.norm_shift = nn.ParameterList(nn.Parameter(torch.zeros(num_members, 1, w)) for w in hidden_dims)
        self.out = EnsembleLinear(num_members, dims[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.hidden):
            x = F.gelu(layer(x))
            if self.layer_norm:
                x = torch.addcmul(self.norm_shift[i], F.layer_norm(x, x.shape[-1:]), self.norm_scale[i])
        return self.out(x)
