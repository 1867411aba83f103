"""State encoders: observations (states, camera frames, proprioception) -> feature vectors.

visual-lps departs on purpose from FQL and the LPS reference, which give each network its own encoder:
by default one encoder produces the state features that the MeanFlow prior, the critic and the latent actor
all read (`AgentConfig.shared_encoder`). Which losses may update it is decided by the agent (see
`visual_lps.nn.encoder_set`), never by the encoder.

An encoder works in two stages so that augmentation can sit between them on the training device:
`preprocess` turns stored observations (uint8 images, float states; one array or a dict of them) into
float tensors, `forward` maps those to features of size `feature_dim`. `image_keys` names the preprocessed
entries that are images (`None`: the whole input is one image; empty: no images).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from visual_lps.observations import ObsSpec, is_image_key


class FlatStateEncoder(nn.Module):
    """Low-dimensional observations pass through unchanged (flattened): state OGBench needs no learned encoder."""

    is_image = False
    image_keys: tuple[str, ...] = ()

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
    image_keys = None

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
    """Any timm backbone by name (`timm:resnet18`). Random weights, or weights read from a local file
    (`weights`, .pth or .safetensors; timm adapts the first convolution to stacked frames): nothing is ever
    downloaded at run time. Pretrained backbones see images normalised as in their pretraining."""

    is_image = True
    image_keys = None

    def __init__(self, obs_shape: tuple[int, ...], model_name: str, weights: str = ""):
        super().__init__()
        import timm

        *stack, _, _, colors = obs_shape
        frames = math.prod(stack)
        try:
            self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=frames * colors)
        except RuntimeError as e:  # timm's "Unknown model"
            raise ValueError(f"encoder 'timm:{model_name}': {e}") from None
        self.feature_dim = self.backbone.num_features
        mean, std = (0.0,) * colors, (1.0,) * colors
        if weights:
            self._load_weights(Path(weights), model_name)
            mean, std = self.backbone.pretrained_cfg["mean"], self.backbone.pretrained_cfg["std"]
        self.register_buffer("mean", torch.tensor(mean * frames).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std * frames).view(1, -1, 1, 1), persistent=False)

    def _load_weights(self, path: Path, model_name: str) -> None:
        """Strict load (timm's own pretrained loader silently skips what does not fit): the file's classifier
        is dropped, the first convolution adapted to stacked frames, and anything else must match."""
        from timm.models import adapt_input_conv, load_state_dict

        if not path.is_file():
            raise FileNotFoundError(f"encoder_weights {path}: no such file")
        try:
            state = load_state_dict(str(path))
        except Exception as e:  # unreadable or not a state dict
            raise ValueError(f"encoder_weights {path}: cannot read weights ({e})") from None
        cfg = self.backbone.pretrained_cfg
        classifiers = cfg.get("classifier") or ()
        for classifier in (classifiers,) if isinstance(classifiers, str) else classifiers:
            state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
        first_conv = f"{cfg.get('first_conv')}.weight"
        own = self.backbone.state_dict()
        if first_conv in state and first_conv in own and state[first_conv].shape[1] != own[first_conv].shape[1]:
            state[first_conv] = adapt_input_conv(own[first_conv].shape[1], state[first_conv],
                                                 base_chans=state[first_conv].shape[1])
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"encoder_weights {path} do not fit timm:{model_name}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, wrong shape {mismatched[:5]}"
            )
        self.backbone.load_state_dict(state)

    def preprocess(self, observations: torch.Tensor) -> torch.Tensor:
        return images_to_float(observations)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)


class MultiModalEncoder(nn.Module):
    """Named observations, as in robot datasets: each `<camera>_image` gets its own image encoder (so
    cameras with different views or sizes do not share filters), the other keys (proprioception) are
    flattened and standardised with the dataset's statistics (buffers, so they travel with checkpoints);
    features are concatenated in key order."""

    def __init__(self, image_encoder: str, spec: Mapping[str, tuple[int, ...]], weights: str = ""):
        super().__init__()
        self.image_keys = tuple(key for key in spec if is_image_key(key))
        self.state_keys = tuple(key for key in spec if not is_image_key(key))
        self.is_image = bool(self.image_keys)
        self.cameras = nn.ModuleDict(
            {key: build_image_encoder(image_encoder, spec[key], weights, key) for key in self.image_keys}
        )
        self.state_frames = {key: math.prod(spec[key][:-1]) for key in self.state_keys}
        sizes = [math.prod(spec[key]) for key in self.state_keys]
        ends = list(itertools.accumulate(sizes))
        self.state_slices = {key: slice(end - size, end) for key, size, end in zip(self.state_keys, sizes, ends)}
        self.state_dim = sum(sizes)
        self.register_buffer("state_mean", torch.zeros(self.state_dim))
        self.register_buffer("state_std", torch.ones(self.state_dim))
        self.feature_dim = sum(encoder.feature_dim for encoder in self.cameras.values()) + self.state_dim

    def set_state_statistics(self, mean: Mapping[str, torch.Tensor], std: Mapping[str, torch.Tensor]) -> None:
        """Per-key statistics of one row (D,), repeated over stacked frames."""
        for key in self.state_keys:
            where = self.state_slices[key]
            self.state_mean[where] = torch.as_tensor(mean[key], dtype=torch.float32).repeat(self.state_frames[key])
            self.state_std[where] = torch.as_tensor(std[key], dtype=torch.float32).repeat(self.state_frames[key])

    def preprocess(self, observations: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [key for key in (*self.image_keys, *self.state_keys) if key not in observations]
        if missing:
            raise KeyError(f"observation keys {missing} missing (have {sorted(observations)})")
        images = {key: images_to_float(observations[key]) for key in self.image_keys}
        states = {}
        for key in self.state_keys:
            where = self.state_slices[key]
            states[key] = (observations[key].flatten(1).float() - self.state_mean[where]) / self.state_std[where]
        return images | states

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.cameras[key](inputs[key]) for key in self.image_keys]
        parts += [inputs[key] for key in self.state_keys]
        return torch.cat(parts, dim=-1)


ENCODERS = ("flat", "impala", "impala_small", "timm:<model name>")


def build_image_encoder(name: str, shape: tuple[int, ...], weights: str = "", key: str = "") -> nn.Module:
    """An image encoder for frames of `shape` = ([stack,] H, W, C), uint8 HWC as stored."""
    where = f" (observation key {key!r})" if key else ""
    if len(shape) not in (3, 4):
        raise ValueError(f"encoder {name!r} needs image observations ([stack,] H, W, C); got shape {shape}{where}")
    if weights and not name.startswith("timm:"):
        raise ValueError(f"encoder_weights is for timm encoders; encoder {name!r} starts from random weights")
    if name == "impala":
        return ImpalaEncoder(shape)
    if name == "impala_small":
        return ImpalaEncoder(shape, blocks_per_stage=1)
    if name.startswith("timm:"):
        return TimmEncoder(shape, name.removeprefix("timm:"), weights)
    raise ValueError(f"unknown encoder {name!r} (config field 'encoder'); available: {', '.join(ENCODERS)}")


def build_encoder(name: str, spec: ObsSpec, weights: str = "") -> nn.Module:
    """The encoder named in the agent config (field 'encoder') for observations of `spec` (one shape, or a
    dict of shapes: keys ending in '_image' are cameras, the rest proprioception)."""
    if isinstance(spec, Mapping):
        if name == "flat" and any(is_image_key(key) for key in spec):
            raise ValueError(f"encoder 'flat' cannot read camera keys {[k for k in spec if is_image_key(k)]}; "
                             f"choose an image encoder: {', '.join(ENCODERS[1:])}")
        return MultiModalEncoder(name, spec, weights)
    if name == "flat":
        return FlatStateEncoder(spec)
    return build_image_encoder(name, spec, weights)
