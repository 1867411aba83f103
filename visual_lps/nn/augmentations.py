"""Image augmentation on the training device.

Random shift (DrQ): pad by a few pixels with the border replicated, crop back to the original size at a
random offset; done here as a translation by a whole number of pixels with the border replicated (kornia's
`translate`, nearest sampling: pixels are copied exactly). Applied to a whole batch with probability `prob`
(FQL's visual setup), and with the *same* shift per transition for its observation and its next
observation, so that the TD target looks at the scene through the same window as the Q-value it trains.
With several cameras each camera draws its own shift (and its own coin), as robomimic's per-camera crops do.

The random draws are separate from their application (`draw`, then `forward`): they are made on the device
from a generator whose state is checkpointed, and the shift itself is a fixed sequence of tensor operations,
with no host-device sync and no data-dependent branch, so the training step compiles as one graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from kornia.geometry.transform import translate
from torch import nn

Inputs = torch.Tensor | Mapping[str, torch.Tensor]
WHOLE_IMAGE = "image"
"""the key of the shifts when the encoder's input is one image tensor rather than a dict of cameras"""


class RandomShift(nn.Module):
    def __init__(self, pad: int, prob: float):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1], got {prob}")
        if pad < 0:
            raise ValueError(f"augmentation padding must be at least 0 pixels, got {pad}")
        self.pad, self.prob = pad, prob

    def draw(self, batch_size: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Shifts (B, 2) in whole pixels (x, y), uniform in [-pad, pad]; all zero when the batch's coin
        (probability 1 - prob) says the batch stays as it is."""
        coin = torch.rand((), device=device, generator=generator) < self.prob
        shifts = torch.randint(-self.pad, self.pad + 1, (batch_size, 2), device=device, generator=generator)
        return shifts.float() * coin

    def forward(self, shifts: torch.Tensor, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Float images (B, C_i, H, W), all moved by the same shift per sample, borders replicated."""
        moved = translate(torch.cat(images, dim=1), shifts.to(images[0].dtype), mode="nearest",
                          padding_mode="border", align_corners=True)
        return tuple(torch.split(moved, [x.shape[1] for x in images], dim=1))

    def draw_transition(
        self, batch_size: int, image_keys: tuple[str, ...] | None, device: torch.device,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """One set of shifts per camera (`image_keys`; None: the input is one image tensor)."""
        keys = (WHOLE_IMAGE,) if image_keys is None else image_keys
        return {key: self.draw(batch_size, device, generator) for key in keys}

    def transition(
        self, shifts: Mapping[str, torch.Tensor], obs: Inputs, next_obs: Inputs, image_keys: tuple[str, ...] | None
    ) -> tuple[Inputs, Inputs]:
        """Shift preprocessed encoder inputs of s_t and s_{t+h} alike: one image tensor (`image_keys` None) or
        the image entries of a dict."""
        if image_keys is None:
            return self(shifts[WHOLE_IMAGE], obs, next_obs)
        obs, next_obs = dict(obs), dict(next_obs)
        for key in image_keys:
            obs[key], next_obs[key] = self(shifts[key], obs[key], next_obs[key])
        return obs, next_obs

    def observation(self, shifts: Mapping[str, torch.Tensor], obs: Inputs, image_keys: tuple[str, ...] | None) -> Inputs:
        """Shift preprocessed encoder inputs of s_t alone (agents that never look at s_{t+h})."""
        if image_keys is None:
            return self(shifts[WHOLE_IMAGE], obs)[0]
        obs = dict(obs)
        for key in image_keys:
            obs[key] = self(shifts[key], obs[key])[0]
        return obs
