"""What every chunked actor-critic agent shares: the shared encoder, the action-space critic, its target
copy and its TD loss. An agent subclass adds its policy and its own losses; LPS is one, and the baselines
(flow BC, QC-FQL, DSRL) are meant to be one more short file each.

Training contract, chosen so that one backward pass and one all-reduce serve all networks under DDP:
`forward(batch)` returns the *sum* of all losses and a dict of detached metrics. Gradient routing (which
loss may update which parameters) is done inside the agent with `detach` and `frozen_call`, never by
toggling `requires_grad`. After each optimiser step the trainer calls `update_targets()`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from visual_lps.augmentations import RandomShift
from visual_lps.critic import CriticEnsemble
from visual_lps.encoders import build_encoder

Batch = dict[str, torch.Tensor]


def detached_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters, detached: a call on them passes gradients to its inputs only."""
    return {name: p.detach() for name, p in module.named_parameters()}


def frozen_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """Call `module` with its parameters detached: gradients flow to the inputs only."""
    return torch.func.functional_call(module, detached_params(module), args)


@dataclass
class ActorCriticConfig:
    """Fields shared by every chunked actor-critic agent."""

    encoder: str = "flat"
    """encoder shared by all networks: 'flat' (states), 'impala', 'impala_small' or 'timm:<name>' (images)"""
    frame_stack: int = 1
    """consecutive observations stacked as the state (the first repeated at episode starts)"""
    augment_prob: float = 0.0
    """probability that a batch of images is randomly shifted (0 turns augmentation off)"""
    augment_pad: int = 3
    """random-shift padding in pixels (border replicated)"""
    horizon: int = 5
    """action chunk length h: the policy outputs h actions, run open loop"""
    discount: float = 0.99
    """per-step discount gamma; a chunk bootstraps with gamma^h"""
    lr: float = 3e-4
    """Adam learning rate for all networks"""
    tau: float = 0.005
    """Polyak rate of the target critic"""
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256, 256)
    """hidden widths of each critic MLP"""
    critic_layer_norm: bool = True
    """LayerNorm after each hidden layer of the critic"""
    critic_ensemble: int = 2
    """number of critics; the TD target takes the minimum over them (clipped double Q)"""


class ChunkedActorCritic(nn.Module):
    """Encoder + critic ensemble + target critic over flattened action chunks of `horizon` actions."""

    def __init__(self, config: ActorCriticConfig, obs_shape: tuple[int, ...], action_dim: int):
        super().__init__()
        self.config = config
        self.obs_shape = tuple(obs_shape)
        self.action_dim = action_dim
        self.chunk_dim = action_dim * config.horizon
        self.encoder = build_encoder(config.encoder, self.obs_shape)
        use_augmentation = self.encoder.is_image and config.augment_prob > 0
        self.augment = RandomShift(config.augment_pad, config.augment_prob) if use_augmentation else None
        feature_dim = self.encoder.feature_dim
        self.critic = CriticEnsemble(
            feature_dim,
            self.chunk_dim,
            config.critic_hidden_dims,
            config.critic_ensemble,
            config.critic_layer_norm,
        )
        # The target critic is a Polyak copy. Its parameters never require grad, so DDP neither all-reduces
        # nor waits on them; every rank updates them identically from identical weights.
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer(
            "discounts", config.discount ** torch.arange(config.horizon, dtype=torch.float32), persistent=False
        )

    def policy(self, features: torch.Tensor) -> torch.Tensor:
        """The agent's action chunk (B, chunk_dim) for state features; differentiable where the agent needs it."""
        raise NotImplementedError

    def encode(self, observations: torch.Tensor) -> torch.Tensor:
        """Features of stored observations (no augmentation)."""
        return self.encoder(self.encoder.preprocess(observations))

    def encode_transition(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of s_t (with gradient, for the losses that train the encoder) and of s_{t+h} (without:
        they only feed the TD target). Both views share one random shift per transition."""
        images = self.encoder.preprocess(batch["observations"])
        next_images = self.encoder.preprocess(batch["next_observations"])
        if self.augment is not None:
            images, next_images = self.augment(images, next_images)
        features = self.encoder(images)
        with torch.no_grad():
            next_features = self.encoder(next_images)
        return features, next_features

    @torch.no_grad()
    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """Action chunks (B, horizon, action_dim) for a batch of observations, for evaluation and deployment."""
        actions = self.policy(self.encode(observations))
        return actions.view(-1, self.config.horizon, self.action_dim)

    @torch.no_grad()
    def td_target(self, batch: Batch, next_features: torch.Tensor, next_actions: torch.Tensor) -> torch.Tensor:
        """y = sum_k gamma^k r_k + gamma^h * prod_k mask_k * min_i Qbar_i(s_{t+h}, a')."""
        chunk_reward = batch["rewards"] @ self.discounts
        chunk_mask = batch["masks"].prod(dim=1)
        next_q = self.target_critic(next_features, next_actions).min(dim=0).values
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

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak-average the critic into the target critic."""
        torch._foreach_lerp_(
            list(self.target_critic.parameters()), list(self.critic.parameters()), self.config.tau
        )

    @staticmethod
    def latent_norm(z: torch.Tensor) -> torch.Tensor:
        """Mean latent norm divided by sqrt(d): 1 on the sphere."""
        return z.norm(dim=-1).mean() / math.sqrt(z.shape[-1])
