"""State encoders shared by every part of an agent.

visual-lps departs on purpose from FQL and the LPS reference, which give each network its own encoder:
one encoder produces the state features that the MeanFlow prior, the critic and the latent actor all read.
Which losses may update it is decided by the agent (see `visual_lps.agents.lps`), never by the encoder.

An encoder works in two stages so that augmentation can sit between them on the training device:
`preprocess` turns stored observations (uint8 images, float states) into float tensors, `forward` maps
those to features of size `feature_dim`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FlatStateEncoder(nn.Module):
    """Low-dimensional observations pass through unchanged (flattened): state OGBench needs no learned encoder."""

    is_image = False

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        self.feature_dim = math.prod(obs_shape)

    def preprocess(self, observations: torch.Tensor) -> torch.Tensor:
        return observations.flatten(1).float()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return states


def images_to_float(observations: torch.Tensor) -> torch.Tensor:
    """uint8 (B, [stack,] H, W, C) -> float (B, stack * C, H, W) in [0, 1], converted on the tensor's device."""
    if observations.dim() == 4:
        observations = observations.unsqueeze(1)
    b, s, h, w, c = observations.shape
    images = observations.permute(0, 1, 4, 2, 3).reshape(b, s * c, h, w)
    return images.float().div_(255.0)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaEncoder(nn.Module):
    """IMPALA CNN (as FQL's visual setup): per stage conv 3x3, max-pool 3x3 stride 2, residual blocks;
    then ReLU, flatten, a 512-unit layer with GELU and LayerNorm."""

    is_image = True

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        channels: tuple[int, ...] = (16, 32, 32),
        blocks_per_stage: int = 2,
        feature_dim: int = 512,
    ):
        super().__init__()
        *stack, height, width, colors = obs_shape
        in_channels = math.prod(stack) * colors
        layers: list[nn.Module] = []
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1)]
            layers += [_ResidualBlock(out_channels) for _ in range(blocks_per_stage)]
            in_channels = out_channels
            height, width = (height + 1) // 2, (width + 1) // 2
        self.trunk = nn.Sequential(*layers, nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(in_channels * height * width, feature_dim), nn.GELU(),
                                  nn.LayerNorm(feature_dim))
        self.feature_dim = feature_dim

    def preprocess(self, observations: torch.Tensor) -> torch.Tensor:
        return images_to_float(observations)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


class TimmEncoder(nn.Module):
    """Any timm backbone by name (`timm:resnet18`), random weights: nothing is downloaded at run time."""

    is_image = True

    def __init__(self, obs_shape: tuple[int, ...], model_name: str):
        super().__init__()
        import timm

        *stack, _, _, colors = obs_shape
        try:
            self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0,
                                              in_chans=math.prod(stack) * colors)
        except RuntimeError as e:  # timm's "Unknown model"
            raise ValueError(f"encoder 'timm:{model_name}': {e}") from None
        self.feature_dim = self.backbone.num_features

    def preprocess(self, observations: torch.Tensor) -> torch.Tensor:
        return images_to_float(observations)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


ENCODERS = ("flat", "impala", "impala_small", "timm:<model name>")


def build_encoder(name: str, obs_shape: tuple[int, ...]) -> nn.Module:
    """The encoder named in the agent config (field 'encoder'); each has `feature_dim`, `is_image`,
    `preprocess(observations)` and `forward(preprocessed)`.

    Image encoders take `obs_shape` = ([stack,] H, W, C) of uint8 frames (HWC as stored)."""
    image = len(obs_shape) in (3, 4)
    if name == "flat":
        return FlatStateEncoder(obs_shape)
    if not image:
        raise ValueError(f"encoder {name!r} needs image observations ([stack,] H, W, C); got shape {obs_shape}")
    if name == "impala":
        return ImpalaEncoder(obs_shape)
    if name == "impala_small":
        return ImpalaEncoder(obs_shape, blocks_per_stage=1)
    if name.startswith("timm:"):
        return TimmEncoder(obs_shape, name.removeprefix("timm:"))
    raise ValueError(f"unknown encoder {name!r} (config field 'encoder'); available: {', '.join(ENCODERS)}")
