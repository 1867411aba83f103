"""Latent Policy Steering (LPS).

Three parts, trained together from step 0 on one shared encoder (see `visual_lps.nn.encoder_set`):
- MeanFlow prior g(s, z): behaviour cloning of action chunks, one-step sampling from the noise sphere
  (flow BC, `visual_lps.agents.flow_bc`);
- action-space critic Q(s, a): chunked TD with the full LPS policy in the target;
- latent actor pi(z|s): maximises Q(s, g(s, pi(s))), its gradient flowing through the differentiable prior.
The prior keeps every action it decodes inside the data's support, so no behaviour-constraint weight is tuned.

Gradient routing (what each loss may update):
- critic loss  -> critic and the shared encoder;
- prior loss   -> prior and the shared encoder;
- actor loss   -> latent actor only: it sees detached features and calls prior and critic with frozen
  parameters, so the Q-gradient passes *through* them without changing them. (With per-network encoders,
  `shared_encoder=False`, it also trains the actor's own encoder.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visual_lps.agents.actor_critic import normalized_q_loss
from visual_lps.agents.base import Batch, Features, detached_params, frozen_call
from visual_lps.agents.latent_steering import LatentSteeringAgent, LatentSteeringConfig


@dataclass
class LPSConfig(LatentSteeringConfig):
    """LPS defaults (state OGBench), from the paper and its public reference code: the critic's, the prior's and
    the latent actor's fields."""


class LPSAgent(LatentSteeringAgent):
    """LPS: MeanFlow prior + action critic + latent actor on one shared encoder."""

    def steering_loss(self, features: Features, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.actor_loss(features)

    def actor_loss(self, features: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean Q(s, g(s, pi(s))) / stopgrad(mean |Q|); only the latent actor (and its own encoder, if any)
        receives gradient."""
        z = self.actor(features["actor"])
        actions = self.prior.sample(features["prior"].detach(), z, params=detached_params(self.prior))
        q = frozen_call(self.critic, features["critic"].detach(), actions)
        loss = normalized_q_loss(q)
        return loss, {"actor/loss": loss.detach(), "actor/q": q.detach().mean(), "actor/z_norm": self.latent_norm(z)}
