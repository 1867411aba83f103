"""The MeanFlow prior: a one-step generative policy over action chunks, trained by behaviour cloning.

Path z_t = (1 - t) x + t eps (t = 0 data, t = 1 noise), velocity v = eps - x. The network g(s, z_t, t, t - r)
is read as g = z_t - u with u the average velocity over [r, t], so g(s, eps, 1, 1) is the action itself:
sampling is one network call, and the call is differentiable, which is what lets LPS steer it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visual_lps.nn.mlp import MLP
from visual_lps.nn.sphere import sample_sphere


class MeanFlowPrior(nn.Module):
    """g(s, z, t, t - r) -> action chunk (flattened, dimension `action_dim`), an MLP on the concatenation."""

    def __init__(
        self,
        feature_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int],
        *,
        t_mean: float,
        t_std: float,
        flow_ratio: float,
        loss_power: float,
        loss_eps: float,
    ):
        """No defaults here: they come from the agent's config (`MeanFlowFields`, which a task's defaults and flags
        may override)."""
        super().__init__()
        self.action_dim = action_dim
        self.t_mean, self.t_std = t_mean, t_std
        self.flow_ratio = flow_ratio
        self.loss_power, self.loss_eps = loss_power, loss_eps
        self.net = MLP(feature_dim + action_dim + 2, hidden_dims, action_dim)

    def forward(self, features: torch.Tensor, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """g(s, z_t, t, t - r); t and r have shape (B, 1)."""
        return self.net(torch.cat([features, z, t, t - r], dim=-1))

    def sample(
        self, features: torch.Tensor, noise: torch.Tensor, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """One-step sampling: the action chunk for noise (or a steered latent) on the sphere, clipped to [-1, 1].

        With `params` (e.g. detached copies of this module's parameters) the call runs on those instead."""
        ones = features.new_ones(features.shape[0], 1)
        inputs = (features, noise, ones, torch.zeros_like(ones))
        out = self(*inputs) if params is None else torch.func.functional_call(self, params, inputs)
        return out.clamp(-1.0, 1.0)

    def sample_noise(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Noise for sampling: uniform on the sphere of radius sqrt(d), (B, d)."""
        return sample_sphere(batch_size, self.action_dim, device=device, generator=generator)

    def draw_noise(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The random inputs of one loss: noise on the sphere (B, d) and standard normals (B, 2) for the times.
        Drawn apart from the loss so that the loss is a deterministic function (one compiled graph)."""
        return {
            "eps": self.sample_noise(batch_size, device, generator),
            "time_normals": torch.randn(batch_size, 2, device=device, generator=generator),
        }

    def times(self, time_normals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Two logit-normal times per row from standard normals, sorted so r <= t; the first `flow_ratio` of the
        batch has r = t. Returns (t, r, number of rows with r = t)."""
        times = torch.sigmoid(time_normals * self.t_std + self.t_mean)
        t, r = times.max(dim=1, keepdim=True).values, times.min(dim=1, keepdim=True).values
        num_flow = int(self.flow_ratio * len(time_normals))
        r = torch.cat([t[:num_flow], r[num_flow:]])
        return t, r, num_flow

    @torch.no_grad()
    def target(
        self, features: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """u_target = v - clip(t - r, 0, 1) du/dt, from the MeanFlow identity u = v - (t - r) du/dt.

        du/dt is the total derivative along the path, by forward-mode autodiff of g at (z_t, t, r) with
        tangents (v, 1, 0): z moves with v, t with 1, r stays. u = z_t - g, so du/dt = v - dg.
        """
        _, dg = torch.func.jvp(
            lambda z_, t_, r_: self(features, z_, t_, r_),
            (z_t, t, r),
            (v, torch.ones_like(t), torch.zeros_like(r)),
        )
        return v - (t - r).clamp(0.0, 1.0) * (v - dg)

    def loss(
        self, features: torch.Tensor, actions: torch.Tensor, noise: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MeanFlow behaviour-cloning loss with adaptive weighting; actions are flattened chunks in [-1, 1],
        `noise` comes from `draw_noise`."""
        batch_size = actions.shape[0]
        eps = noise["eps"]
        t, r, num_flow = self.times(noise["time_normals"])
        z_t = (1.0 - t) * actions + t * eps
        v = eps - actions

        g = self(features, z_t, t, r)
        u = z_t - g
        # Rows with r = t reduce to flow matching (target v): only the others need the forward-mode derivative.
        u_target = v.clone()
        if num_flow < batch_size:
            rest = slice(num_flow, None)
            u_target[rest] = self.target(features[rest], z_t[rest], t[rest], r[rest], v[rest])
        err = (u - u_target).pow(2).mean(dim=-1)
        weight = (err.detach() + self.loss_eps).pow(-self.loss_power)
        loss = (weight * err).mean()
        return loss, {"prior/loss": loss.detach(), "prior/mse": err.detach().mean()}
