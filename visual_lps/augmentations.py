"""Image augmentation on the training device.

Random shift (DrQ): pad by a few pixels with the border replicated, crop back to the original size at a
random offset. Applied to a whole batch with probability `prob` (FQL's visual setup), and with the *same*
shift per transition for its observation and its next observation, so that the TD target looks at the
scene through the same window as the Q-value it trains. With several cameras each camera draws its own
shift (and its own coin), as robomimic's per-camera crops do.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


Inputs = torch.Tensor | Mapping[str, torch.Tensor]


class RandomShift(nn.Module):
    def __init__(self, pad: int = 3, prob: float = 0.5):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"augmentation probability must be in [0, 1], got {prob}")
        self.pad, self.prob = pad, prob

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Float images (B, C_i, H, W), all shifted alike per sample; the identity in eval mode."""
        if not self.training or self.prob == 0.0 or self.pad == 0 or torch.rand(()).item() >= self.prob:
            return images
        import kornia.augmentation as K

        height, width = images[0].shape[-2:]
        crop = K.RandomCrop((height, width), padding=self.pad, padding_mode="replicate")
        shifted = crop(torch.cat(images, dim=1))
        return tuple(torch.split(shifted, [x.shape[1] for x in images], dim=1))

    def transition(self, obs: Inputs, next_obs: Inputs, image_keys: tuple[str, ...] | None) -> tuple[Inputs, Inputs]:
        """Shift preprocessed encoder inputs of s_t and s_{t+h} alike: one image tensor (`image_keys` None) or
        the image entries of a dict."""
        if image_keys is None:
            return self(obs, next_obs)
        obs, next_obs = dict(obs), dict(next_obs)
        for key in image_keys:
            obs[key], next_obs[key] = self(obs[key], next_obs[key])
        return obs, next_obs
