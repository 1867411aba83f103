"""Latent Policy Steering (LPS).

Three parts, trained together from step 0 on one shared encoder (see `visual_lps.encoder_set`):
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

from visual_lps.agents.actor_critic import ActorCriticAgent, CriticConfig
from visual_lps.agents.base import Batch, Features, detached_params, frozen_call
from visual_lps.agents.flow_bc import FlowBCConfig, build_prior
from visual_lps.latent_actor import LatentActor
from visual_lps.observations import ObsSpec
from visual_lps.sphere import sample_sphere


@dataclass
class LPSConfig(CriticConfig, FlowBCConfig):
    """LPS defaults (state OGBench), from the paper and its public reference code: the critic's and the prior's
    fields, and the latent actor's."""

    actor_hidden_dims: tuple[int, ...] = (256, 256)
    """hidden widths of the latent actor MLP"""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | {
            "actor_hidden_dims": (all(w >= 1 for w in self.actor_hidden_dims), "widths of at least 1"),
        }


class LPSAgent(ActorCriticAgent):
    """LPS: MeanFlow prior + action critic + latent actor on one shared encoder."""

    roles = ("critic", "prior", "actor")
    encoder_trained_by = ("critic", "prior")
    next_roles = ("prior", "actor", "target")
    noise_modules = ("prior",)

    def __init__(self, config: LPSConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        self.prior = build_prior(config, self.feature_dim, self.chunk_dim)
        self.actor = LatentActor(self.feature_dim, self.chunk_dim, config.actor_hidden_dims)

    def policy(self, features: Features) -> torch.Tensor:
        return self.prior.sample(features["prior"], self.actor(features["actor"]))

    def prior_actions(self, features: Features, generator: torch.Generator | None = None) -> torch.Tensor:
        """The prior alone (flow BC) from uniform noise on the sphere, (B, chunk_dim) in [-1, 1]: what LPS
        steers away from."""
        noise = sample_sphere(features["prior"].shape[0], self.chunk_dim, device=features["prior"].device,
                              generator=generator)
        return self.prior.sample(features["prior"], noise)

    @torch.no_grad()
    def act_prior(self, observations, generator: torch.Generator | None = None) -> torch.Tensor:
        """`prior_actions` for observations, as chunks (B, horizon, action_dim) in the dataset's units."""
        actions = self.prior_actions(self.encode(observations), generator)
        return self.unnormalize_actions(actions.view(-1, self.config.horizon, self.action_dim))

    def extra_validation_metrics(
        self, features: Features, demo: torch.Tensor, actions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The critic's values, and the prior's (flow BC's) action error for comparison with the policy's."""
        generator = torch.Generator(demo.device).manual_seed(0)  # the training RNG streams stay untouched
        prior_mse = (self.prior_actions(features, generator) - demo).pow(2).mean()
        return super().extra_validation_metrics(features, demo, actions) | {"valid/prior_action_mse": prior_mse}

    def actor_loss(self, features: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean Q(s, g(s, pi(s))) / stopgrad(mean |Q|); only the latent actor (and its own encoder, if any)
        receives gradient."""
        z = self.actor(features["actor"])
        actions = self.prior.sample(features["prior"].detach(), z, params=detached_params(self.prior))
        q = frozen_call(self.critic, features["critic"].detach(), actions)
        loss = -q.mean() / q.detach().abs().mean().clamp_min(1e-6)
        return loss, {"actor/loss": loss.detach(), "actor/q": q.detach().mean(), "actor/z_norm": self.latent_norm(z)}


    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, next_features = self.encode_transition(batch)
        with torch.no_grad():
            next_actions = self.policy(next_features)
        critic_loss, metrics = self.critic_loss(features["critic"], next_features["target"], batch, next_actions)
        prior_loss, prior_metrics = self.prior.loss(features["prior"], batch["actions"].flatten(1),
                                                    batch["random"]["prior"])
        actor_loss, actor_metrics = self.actor_loss(features)
        return critic_loss + prior_loss + actor_loss, metrics | prior_metrics | actor_metrics
