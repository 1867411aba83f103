"""The latent space of LPS: the sphere of radius sqrt(d) in R^d.

Prior noise and the latent actor's outputs both live here. Bounding the latent keeps the prior's inputs
where it was trained, which is LPS's answer to the latent norm growing without limit under Q-ascent.
"""

from __future__ import annotations

import math

import torch


def project_to_sphere(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale each row of x (last dim d) to norm sqrt(d)."""
    d = x.shape[-1]
    return x * (math.sqrt(d) / x.norm(dim=-1, keepdim=True).clamp_min(eps))


def sample_sphere(
    batch_size: int,
    dim: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform samples on the sphere of radius sqrt(dim): a normalised Gaussian."""
    g = torch.randn(batch_size, dim, device=device, generator=generator)
    return project_to_sphere(g)
