"""What an agent with an action-space critic adds: the critic ensemble, its Polyak target and the chunked TD
loss. LPS, QC-FQL and DSRL are such agents; flow BC is not.

The TD target reads the target critic on features of s_{t+h} (the 'target' role of the encoder set: the
shared encoder's, or a Polyak copy of the critic's own encoder) without gradient.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from visual_lps.agents.base import AgentConfig, Batch, ChunkedAgent, Features
from visual_lps.nn.critic import CriticEnsemble
from visual_lps.observations import ObsSpec

TARGET_AGGREGATES = ("min", "mean")


def normalized_q_loss(q: torch.Tensor) -> torch.Tensor:
    """-mean Q / stopgrad(mean |Q|): the actor's Q objective at a scale-free size, so its weight against other
    losses (and its learning rate) do not depend on the size of the returns."""
    return -q.mean() / q.detach().abs().mean().clamp_min(1e-6)


@dataclass
class CriticConfig(AgentConfig):
    """Fields of agents that learn an action-space critic by chunked TD."""

    discount: float = 0.99
    """per-step discount gamma; a chunk bootstraps with gamma^h"""
    tau: float = 0.005
    """Polyak rate of the target critic"""
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256, 256)
    """hidden widths of each critic MLP"""
    critic_layer_norm: bool = True
    """LayerNorm after each hidden layer of the critic"""
    critic_ensemble: int = 2
    """number of critics"""
    critic_target: str = "min"
    """how the TD target combines the target critics: 'min' (clipped double Q) or 'mean'"""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | {
            "discount": (0.0 < self.discount <= 1.0, "in (0, 1]"),
            "tau": (0.0 < self.tau <= 1.0, "in (0, 1]"),
            "critic_hidden_dims": (all(w >= 1 for w in self.critic_hidden_dims), "widths of at least 1"),
            "critic_ensemble": (self.critic_ensemble >= 1, "at least 1"),
            "critic_target": (self.critic_target in TARGET_AGGREGATES, f"one of {', '.join(TARGET_AGGREGATES)}"),
        }


class ActorCriticAgent(ChunkedAgent):
    """An encoder set, a policy, and a critic ensemble Q(s, a_chunk) with its target copy."""

    target_role = "critic"
    progress_metrics = ("critic/loss", "critic/q_mean")

    def __init__(self, config: CriticConfig, obs_spec: ObsSpec, action_dim: int):
        if "critic" not in self.roles or "target" not in self.next_roles:
            raise TypeError(f"{type(self).__name__}: an actor-critic agent has the 'critic' role and the "
                            f"'target' view of s_(t+h)")
        super().__init__(config, obs_spec, action_dim)
        self.critic = CriticEnsemble(self.feature_dim, self.chunk_dim, config.critic_hidden_dims,
                                     config.critic_ensemble, config.critic_layer_norm)
        # The target critic is a Polyak copy. Its parameters never require grad, so no gradient is computed or
        # all-reduced for them; every process updates them identically from identical weights.
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer(
            "discounts", config.discount ** torch.arange(config.horizon, dtype=torch.float32), persistent=False
        )

    @torch.no_grad()
    def td_target(self, batch: Batch, next_features: torch.Tensor, next_actions: torch.Tensor) -> torch.Tensor:
        """y = sum_k gamma^k r_k + gamma^h * prod_k mask_k * agg_i Qbar_i(s_{t+h}, a')."""
        chunk_reward = batch["rewards"] @ self.discounts
        chunk_mask = batch["masks"].prod(dim=1)
        next_qs = self.target_critic(next_features, next_actions)
        next_q = next_qs.min(dim=0).values if self.config.critic_target == "min" else next_qs.mean(dim=0)
        return chunk_reward + self.config.discount**self.config.horizon * chunk_mask * next_q

    def critic_loss(
        self, features: torch.Tensor, next_features: torch.Tensor, batch: Batch, next_actions: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean over members and batch of (Q_i(s, a) - y)^2."""
        target = self.td_target(batch, next_features, next_actions)
        q = self.critic(features, batch["actions"].flatten(1))
        loss = (q - target).pow(2).mean()
        return loss, {
            "critic/loss": loss.detach(),
            "critic/q_mean": q.detach().mean(),
            "critic/q_max": q.detach().max(),
            "critic/q_min": q.detach().min(),
            "critic/target_mean": target.mean(),
        }

    def extra_validation_metrics(
        self, features: Features, demo: torch.Tensor, actions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The critic's values of the demonstrated and the policy's chunks."""
        q_demo = self.critic(features["critic"], demo)
        q_policy = self.critic(features["critic"], actions)
        return {
            "valid/q_demo": q_demo.mean(),
            "valid/q_policy": q_policy.mean(),
            "valid/q_gap": (q_policy.min(dim=0).values - q_demo.min(dim=0).values).mean(),
        }

    def target_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(target parameters, the parameters they follow) for the Polyak update: the target critic's, and the
        critic's own encoder's target copy when encoders are per role."""
        targets, sources = self.encoders.target_pairs()
        return list(self.target_critic.parameters()) + targets, list(self.critic.parameters()) + sources

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak-average every target copy towards what it follows, at rate `CriticConfig.tau`."""
        targets, sources = self.target_pairs()
        torch._foreach_lerp_(targets, sources, self.config.tau)
