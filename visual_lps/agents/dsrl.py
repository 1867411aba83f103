"""DSRL (diffusion steering by RL), offline and noise-aliased, the paper's latent-space baseline.

The same MeanFlow prior and action critic as LPS, but the latent actor is trained on a *proxy*: a latent
critic Q^W(s, w), regressed onto Q^A(s, prior(s, w)) for noise w drawn from the prior's sphere (noise
aliasing), is what the actor maximises. LPS removes this proxy by back-propagating Q^A through the prior.

Gradient routing (shared encoder): critic and prior losses train it; the latent critic and the latent actor
read detached features; the latent critic's regression target is computed without gradient, and the actor
calls the latent critic frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visual_lps.agents.actor_critic import normalized_q_loss
from visual_lps.agents.base import Batch, Features, frozen_call
from visual_lps.agents.latent_steering import LatentSteeringAgent, LatentSteeringConfig
from visual_lps.nn.critic import CriticEnsemble
from visual_lps.observations import ObsSpec
from visual_lps.nn.sphere import sample_sphere


@dataclass
class DSRLConfig(LatentSteeringConfig):
    """DSRL defaults, from its public reference code: the critic's, the prior's and the latent actor's fields, and
    the latent critic's (an ensemble as large as the action critic's)."""

    latent_critic_hidden_dims: tuple[int, ...] = (256, 256, 256, 256)
    """hidden widths of each latent critic Q^W(s, w) MLP"""
    critic_target: str = "mean"
    """how the TD target combines the target critics: 'min' (clipped double Q) or 'mean' (DSRL's)"""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | {
            "latent_critic_hidden_dims": (all(w >= 1 for w in self.latent_critic_hidden_dims),
                                          "widths of at least 1"),
        }


class DSRLAgent(LatentSteeringAgent):
    """MeanFlow prior + action critic + latent critic + latent actor."""

    roles = LatentSteeringAgent.roles + ("latent_critic",)

    def __init__(self, config: DSRLConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        self.latent_critic = CriticEnsemble(self.feature_dim, self.chunk_dim, config.latent_critic_hidden_dims,
                                            config.critic_ensemble, config.critic_layer_norm)

    def draw_random_inputs(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> dict:
        """The image shifts, the MeanFlow loss's noise and times, and the noise the latent critic is fitted on."""
        return super().draw_random_inputs(batch_size, device, generator) | {
            "aliasing": sample_sphere(batch_size, self.chunk_dim, device=device, generator=generator),
        }

    def steering_loss(self, features: Features, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        latent_loss, latent_metrics = self.latent_critic_loss(features, batch["random"]["aliasing"])
        actor_loss, actor_metrics = self.actor_loss(features)
        return latent_loss + actor_loss, latent_metrics | actor_metrics

    def latent_critic_loss(self, features: Features, w: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(Q^W_i(s, w) - mean_j Q^A_j(s, prior(s, w)))^2: noise aliasing, the target without gradient."""
        with torch.no_grad():
            actions = self.prior.sample(features["prior"], w)
            target = self.critic(features["critic"], actions).mean(dim=0)
        q_w = self.latent_critic(features["latent_critic"].detach(), w)
        loss = (q_w - target).pow(2).mean()
        return loss, {"latent_critic/loss": loss.detach(), "latent_critic/q_mean": q_w.detach().mean()}

    def actor_loss(self, features: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean Q^W(s, pi(s)) / stopgrad(mean |Q^W|); only the latent actor learns."""
        z = self.actor(features["actor"].detach())
        q = frozen_call(self.latent_critic, features["latent_critic"].detach(), z).mean(dim=0)
        loss = normalized_q_loss(q)
        return loss, {"actor/loss": loss.detach(), "actor/q": q.detach().mean(), "actor/z_norm": self.latent_norm(z)}
