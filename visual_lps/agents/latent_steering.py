"""What LPS and DSRL share: a MeanFlow prior g(s, z) trained by behaviour cloning, an action critic trained by
chunked TD, and a latent actor pi(z|s) whose noise the prior decodes. They differ only in how the actor learns
(`steering_loss`): LPS back-propagates Q through the prior, DSRL maximises a latent critic fitted to it.

The policy's action is g(s, pi(s)); the TD target uses that same policy at s_{t+h}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visual_lps.agents.actor_critic import ActorCriticAgent, CriticConfig
from visual_lps.agents.base import Batch, Features
from visual_lps.agents.flow_bc import FlowBCConfig, build_prior
from visual_lps.nn.latent_actor import LatentActor
from visual_lps.observations import ObsSpec
from visual_lps.nn.sphere import sample_sphere


@dataclass
class LatentSteeringConfig(CriticConfig, FlowBCConfig):
    """The critic's and the prior's fields, and the latent actor's."""

    actor_hidden_dims: tuple[int, ...] = (256, 256)
    """hidden widths of the latent actor MLP"""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | {
            "actor_hidden_dims": (all(w >= 1 for w in self.actor_hidden_dims), "widths of at least 1"),
        }


class LatentSteeringAgent(ActorCriticAgent):
    """MeanFlow prior + action critic + latent actor; a subclass says how the actor learns."""

    roles = ("critic", "prior", "actor")
    encoder_trained_by = ("critic", "prior")
    next_roles = ("prior", "actor", "target")
    noise_modules = ("prior",)

    def __init__(self, config: LatentSteeringConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        self.prior = build_prior(config, self.feature_dim, self.chunk_dim)
        self.actor = LatentActor(self.feature_dim, self.chunk_dim, config.actor_hidden_dims)

    def policy_actions(self, features: Features) -> torch.Tensor:
        return self.prior.sample(features["prior"], self.actor(features["actor"]))

    def prior_actions(self, features: Features, generator: torch.Generator | None = None) -> torch.Tensor:
        """The prior alone (flow BC) from uniform noise on the sphere, (B, chunk_dim) in [-1, 1]: what the
        actor steers away from."""
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

    def steering_loss(self, features: Features, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss that trains the latent actor (and whatever it learns from)."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, next_features = self.encode_transition(batch)
        with torch.no_grad():
            next_actions = self.policy_actions(next_features)
        critic_loss, metrics = self.critic_loss(features["critic"], next_features["target"], batch, next_actions)
        prior_loss, prior_metrics = self.prior.loss(features["prior"], batch["actions"].flatten(1),
                                                    batch["random"]["prior"])
        steering_loss, steering_metrics = self.steering_loss(features, batch)
        return critic_loss + prior_loss + steering_loss, metrics | prior_metrics | steering_metrics
