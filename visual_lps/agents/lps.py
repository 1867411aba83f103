"""Latent Policy Steering (LPS).

Three parts, trained together from step 0 on one shared encoder (see `visual_lps.nn.encoder_set`):
- MeanFlow prior g(s, z): behaviour cloning of action chunks, one-step sampling from the noise sphere
  (MeanFlow BC, `visual_lps.agents.meanflow_bc`);
- action-space critic Q(s, a): chunked TD with the full LPS policy g(s, pi(s)) in the target
  (`visual_lps.agents.actor_critic`);
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

from visual_lps.agents.actor_critic import ActorCriticAgent, CriticConfig, normalized_q_loss
from visual_lps.agents.base import Batch, Features, detached_params, frozen_call
from visual_lps.agents.meanflow_bc import MeanFlowFields
from visual_lps.nn.latent_actor import LatentActor
from visual_lps.observations import ObsSpec


@dataclass
class LPSConfig(CriticConfig, MeanFlowFields):
    """LPS defaults (state OGBench), from the paper and its public reference code: the critic's, the prior's and
    the latent actor's fields."""

    actor_hidden_dims: tuple[int, ...] = (256, 256)
    """hidden widths of the latent actor MLP"""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | self.meanflow_ranges() | {
            "actor_hidden_dims": (all(w >= 1 for w in self.actor_hidden_dims), "widths of at least 1"),
        }


class LPSAgent(ActorCriticAgent):
    """MeanFlow prior + action critic + latent actor, on one shared encoder."""

    roles = ("critic", "prior", "actor")
    encoder_trained_by = ("critic", "prior")
    next_roles = ("prior", "actor", "target")
    noise_modules = ("prior",)

    def __init__(self, config: LPSConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        self.prior = config.build_meanflow_prior(self.feature_dim, self.chunk_dim)
        self.actor = LatentActor(self.feature_dim, self.chunk_dim, config.actor_hidden_dims)

    def policy_actions(self, features: Features) -> torch.Tensor:
        """g(s, pi(s)): the prior decodes the latent the actor chose."""
        return self.prior.sample(features["prior"], self.actor(features["actor"]))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, next_features = self.encode_transition(batch)
        with torch.no_grad():
            next_actions = self.policy_actions(next_features)
        critic_loss, metrics = self.critic_loss(features["critic"], next_features["target"], batch, next_actions)
        prior_loss, prior_metrics = self.prior.loss(features["prior"], batch["actions"].flatten(1),
                                                    batch["random"]["prior"])
        actor_loss, actor_metrics = self.actor_loss(features)
        return critic_loss + prior_loss + actor_loss, metrics | prior_metrics | actor_metrics

    def actor_loss(self, features: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean Q(s, g(s, pi(s))) / stopgrad(mean |Q|); only the latent actor (and its own encoder, if any)
        receives gradient."""
        z = self.actor(features["actor"])
        actions = self.prior.sample(features["prior"].detach(), z, params=detached_params(self.prior))
        q = frozen_call(self.critic, features["critic"].detach(), actions)
        loss = normalized_q_loss(q)
        return loss, {"actor/loss": loss.detach(), "actor/q": q.detach().mean(), "actor/z_norm": self.latent_norm(z)}

    def extra_validation_metrics(
        self, features: Features, demo: torch.Tensor, actions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The critic's values, and the prior's own (MeanFlow BC's) action error beside the policy's."""
        return super().extra_validation_metrics(features, demo, actions) | {
            "valid/prior_action_mse": prior_action_mse(self.prior, features["prior"], demo)}


def prior_action_mse(prior: torch.nn.Module, features: torch.Tensor, demo: torch.Tensor) -> torch.Tensor:
    """The error of a steered agent's prior alone (unsteered noise) against the demonstrated chunks. Its noise
    comes from a fixed seed, so the training random streams stay untouched."""
    generator = torch.Generator(demo.device).manual_seed(0)
    noise = prior.sample_noise(features.shape[0], demo.device, generator)
    return (prior.sample(features, noise) - demo).pow(2).mean()
