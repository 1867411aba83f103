"""Image augmentation on the training device.

Random shift (DrQ): pad by a few pixels with the border replicated, crop back to the original size at a
random offset. Applied to a whole batch with probability `prob` (FQL's visual setup), and with the *same*
shift per transition for its observation and its next observation, so that the TD target looks at the
scene through the same window as the Q-value it trains.
"""

from __future__ import annotations

import torch
from torch import nn


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
