"""DSRL (diffusion steering by RL), offline and noise-aliased: the paper's latent-steering baseline, as the
public LPS code runs it (`agents/dsrl.py`).

- BC policy: a 10-step flow-matching policy (`visual_lps.agents.flow_bc`, 4 x 512, uniform times) whose noise
  x_0 is drawn on the sphere of radius sqrt(d), so that a latent actor projected onto the sphere can steer it.
  `prior='meanflow'` puts LPS's one-step MeanFlow prior there instead: DSRL over a MeanFlow prior, the variant
  this project ran before, kept for the comparison (it hands DSRL half of LPS's contribution).
- Action critic Q^A(s, a): chunked TD with the steered policy in the target, the mean of the target critics.
- Noise critic Q^W(s, w): regressed onto mean_i Q^A_i(s, flow(s, w)) for w drawn on the sphere (noise aliasing).
- Latent actor pi(w|s) (4 x 512, projected to the sphere): maximises Q^W(s, pi(s)) / stopgrad(mean |Q^W|). (The
  reference multiplies this by alpha, 1 by default; only this loss reaches the actor and Adam is invariant to its
  scale, so there is no such field here.)
LPS removes the noise critic by back-propagating Q^A through a one-step prior.

Gradient routing (shared encoder): critic and BC losses train it; noise critic and latent actor read detached
features; the aliasing target is computed without gradient and the actor calls the noise critic frozen.
Where ours differs from the reference: its aliasing loss also sends gradient into Q^A (the target Q^A(s, flow(s, w))
is computed with the trained parameters), pulling the action critic towards its own proxy; here the target is
fixed, as noise aliasing is defined (DSRL, arXiv 2506.15799), so Q^A learns from TD alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visual_lps.agents.actor_critic import ActorCriticAgent, CriticConfig, normalized_q_loss
from visual_lps.agents.base import Batch, Features, frozen_call
from visual_lps.agents.flow_bc import FlowFields
from visual_lps.agents.lps import prior_action_mse
from visual_lps.agents.meanflow_bc import MeanFlowFields
from visual_lps.nn.critic import CriticEnsemble
from visual_lps.nn.latent_actor import LatentActor
from visual_lps.nn.sphere import sample_sphere
from visual_lps.observations import ObsSpec

PRIORS = ("flow", "meanflow")


@dataclass
class DSRLConfig(CriticConfig, FlowFields, MeanFlowFields):
    """DSRL defaults, from the public LPS code: the critic's, the BC flow's (or MeanFlow prior's), the latent
    actor's and the noise critic's (an ensemble as large as the action critic's)."""

    prior: str = "flow"
    """the policy the latent actor steers: 'flow' (the paper's: 10-step flow BC) or 'meanflow' (LPS's one-step prior)"""
    actor_hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """hidden widths of the latent actor MLP"""
    latent_critic_hidden_dims: tuple[int, ...] = (256, 256, 256, 256)
    """hidden widths of each noise critic Q^W(s, w) MLP"""
    critic_target: str = "mean"
    """how the TD target combines the target critics: 'min' (clipped double Q) or 'mean' (DSRL's)"""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | self.flow_ranges() | self.meanflow_ranges() | {
            "prior": (self.prior in PRIORS, f"one of {', '.join(PRIORS)}"),
            "actor_hidden_dims": (all(w >= 1 for w in self.actor_hidden_dims), "widths of at least 1"),
            "latent_critic_hidden_dims": (all(w >= 1 for w in self.latent_critic_hidden_dims),
                                          "widths of at least 1"),
        }


class DSRLAgent(ActorCriticAgent):
    """BC flow (or MeanFlow prior) + action critic + noise critic + latent actor."""

    roles = ("critic", "prior", "actor", "latent_critic")
    encoder_trained_by = ("critic", "prior")
    next_roles = ("prior", "actor", "target")
    noise_modules = ("prior",)

    def __init__(self, config: DSRLConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        if config.prior == "flow":
            self.prior = config.build_flow_policy(self.feature_dim, self.chunk_dim, noise="sphere")
        else:
            self.prior = config.build_meanflow_prior(self.feature_dim, self.chunk_dim)
        self.actor = LatentActor(self.feature_dim, self.chunk_dim, config.actor_hidden_dims)
        self.latent_critic = CriticEnsemble(self.feature_dim, self.chunk_dim, config.latent_critic_hidden_dims,
                                            config.critic_ensemble, config.critic_layer_norm)

    def policy_actions(self, features: Features) -> torch.Tensor:
        """The BC policy decoding the noise the actor chose."""
        return self.prior.sample(features["prior"], self.actor(features["actor"]))

    def draw_random_inputs(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> dict:
        """The image shifts, the BC loss's noise and times, and the noise the noise critic is fitted on."""
        return super().draw_random_inputs(batch_size, device, generator) | {
            "aliasing": sample_sphere(batch_size, self.chunk_dim, device=device, generator=generator),
        }

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, next_features = self.encode_transition(batch)
        with torch.no_grad():
            next_actions = self.policy_actions(next_features)
        critic_loss, metrics = self.critic_loss(features["critic"], next_features["target"], batch, next_actions)
        bc_loss, bc_metrics = self.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])
        aliasing_loss, aliasing_metrics = self.aliasing_loss(features, batch["random"]["aliasing"])
        actor_loss, actor_metrics = self.actor_loss(features)
        return (critic_loss + bc_loss + aliasing_loss + actor_loss,
                metrics | bc_metrics | aliasing_metrics | actor_metrics)

    def aliasing_loss(self, features: Features, w: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(Q^W_i(s, w) - mean_j Q^A_j(s, prior(s, w)))^2, the target without gradient."""
        with torch.no_grad():
            target = self.critic(features["critic"], self.prior.sample(features["prior"], w)).mean(dim=0)
        q_w = self.latent_critic(features["latent_critic"].detach(), w)
        loss = (q_w - target).pow(2).mean()
        return loss, {"latent_critic/loss": loss.detach(), "latent_critic/q_mean": q_w.detach().mean()}

    def actor_loss(self, features: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-mean Q^W(s, pi(s)) / stopgrad(mean |Q^W|); only the latent actor learns."""
        z = self.actor(features["actor"].detach())
        q = frozen_call(self.latent_critic, features["latent_critic"].detach(), z).mean(dim=0)
        loss = normalized_q_loss(q)
        return loss, {"actor/loss": loss.detach(), "actor/q": q.detach().mean(), "actor/z_norm": self.latent_norm(z)}

    def extra_validation_metrics(
        self, features: Features, demo: torch.Tensor, actions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The critic's values, and the BC policy's own action error beside the steered policy's."""
        return super().extra_validation_metrics(features, demo, actions) | {
            "valid/prior_action_mse": prior_action_mse(self.prior, features["prior"], demo)}
