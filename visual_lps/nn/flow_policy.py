"""A multi-step flow-matching policy: a velocity field v(s, x_t, t) from noise (t = 0) to action chunks (t = 1),
trained with uniform times and sampled by Euler integration in `steps` steps.

The BC policy of the paper's baselines: flow BC (alone), QC-FQL (distilled into a one-step policy) and DSRL
(steered through its noise). Unlike the MeanFlow prior (`visual_lps.nn.meanflow`), sampling takes `steps`
network calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visual_lps.nn.mlp import MLP
from visual_lps.nn.sphere import sample_sphere

NOISE_KINDS = ("normal", "sphere")


class FlowPolicy(nn.Module):
    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int], steps: int,
                 noise: str = "normal"):
        """`noise`: where x_0 is drawn, 'normal' (N(0, I)) or 'sphere' (radius sqrt(d): what a latent actor
        projected onto the sphere can steer)."""
        super().__init__()
        if noise not in NOISE_KINDS:
            raise ValueError(f"FlowPolicy noise must be one of {NOISE_KINDS}, not {noise!r}")
        self.action_dim, self.steps, self.noise = action_dim, steps, noise
        self.net = MLP(feature_dim + action_dim + 1, hidden_dims, action_dim)

    def forward(self, features: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity at x_t; t has shape (B, 1)."""
        return self.net(torch.cat([features, x, t], dim=-1))

    def sample_noise(self, batch_size: int, device: torch.device,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """x_0 for sampling: (B, d) from this policy's noise distribution."""
        if self.noise == "sphere":
            return sample_sphere(batch_size, self.action_dim, device=device, generator=generator)
        return torch.randn(batch_size, self.action_dim, device=device, generator=generator)

    def draw_noise(self, batch_size: int, device: torch.device,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The random inputs of one loss: noise x_0 (B, d) and uniform times (B, 1)."""
        return {"noise": self.sample_noise(batch_size, device, generator),
                "t": torch.rand(batch_size, 1, device=device, generator=generator)}

    def loss(self, features: torch.Tensor, actions: torch.Tensor,
             noise: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Flow matching: ||v(s, x_t, t) - (a - x_0)||^2 on x_t = (1 - t) x_0 + t a."""
        x0, t = noise["noise"], noise["t"]
        x_t = (1 - t) * x0 + t * actions
        loss = (self(features, x_t, t) - (actions - x0)).pow(2).mean()
        return loss, {"bc_flow/loss": loss.detach()}

    def sample(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Euler integration from the noise, clipped to [-1, 1]."""
        x, dt = noise, 1.0 / self.steps
        for i in range(self.steps):
            t = features.new_full((features.shape[0], 1), i * dt)
            x = x + dt * self(features, x, t)
        return x.clamp(-1.0, 1.0)
