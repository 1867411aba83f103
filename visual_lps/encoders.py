"""State encoders shared by every part of an agent.

visual-lps departs on purpose from FQL and the LPS reference, which give each network its own encoder:
one encoder produces the state features that the MeanFlow prior, the critic and the latent actor all read.
Which losses may update it is decided by the agent (see `visual_lps.agents.lps`), never by the encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FlatStateEncoder(nn.Module):
    """Low-dimensional observations pass through unchanged (flattened): state OGBench needs no learned encoder."""

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        self.feature_dim = math.prod(obs_shape)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations.flatten(1).float()


def build_encoder(name: str, obs_shape: tuple[int, ...]) -> nn.Module:
    """The encoder named in the agent config; every encoder exposes `feature_dim`."""
    if name == "flat":
        return FlatStateEncoder(obs_shape)
    raise ValueError(f"unknown encoder {name!r} (config field 'encoder'); available: 'flat'")
