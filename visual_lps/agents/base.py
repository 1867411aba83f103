"""What every chunked actor-critic agent shares: the state encoder(s), the action-space critic, its target
copy and its TD loss. An agent subclass adds its policy and its own losses; LPS is one, and the baselines
(flow BC, QC-FQL, DSRL) are meant to be one more short file each.

Encoders. Each network that reads the state has a *role* (`encoder_roles`: the critic plus the agent's
`policy_roles`). By default one shared encoder serves every role, a deliberate departure from FQL and the
LPS reference: images are encoded once per step instead of once per network. Only the losses of the roles
in `shared_encoder_losses` update it; the other roles read its features detached. The TD target reads the
online encoder's features of s_{t+h} without gradient. With `shared_encoder=False` every role gets its own
encoder trained by its own loss, and the target critic a Polyak copy of the critic's encoder (the
reference's layout, kept for comparison).

Training contract, chosen so that one gradient computation and one all-reduce serve all networks
(`visual_lps.update.UpdateStep`): `forward(batch)` returns the *sum* of all losses and a dict of metrics; it
uses no randomness of its own (what it needs, `draw_random_inputs` drew into `batch["random"]`) and never
syncs with the host, so the whole update compiles as one graph. Gradient routing (which loss may update which
parameters) is done inside the agent with `detach` and `frozen_call`, never by toggling `requires_grad`.
After each optimiser step the update calls `update_targets()`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from visual_lps.augmentations import RandomShift
from visual_lps.compile_options import compile_graph
from visual_lps.critic import CriticEnsemble
from visual_lps.encoders import build_encoder
from visual_lps.observations import ObsSpec

Batch = dict[str, Any]
"""Tensors by name (observations may be a dict of tensors), and `random`: what `draw_random_inputs` drew."""
Features = dict[str, torch.Tensor]
"""State features per encoder role ('critic', the policy roles, and 'target' for s_{t+h})."""


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
    """state encoder: 'flat' (states), 'impala', 'impala_small' or 'timm:<name>' (images; one per camera)"""
    encoder_weights: str = ""
    """local weights file (.pth or .safetensors) for a timm encoder; empty: random init (never downloads)"""
    shared_encoder: bool = True
    """one encoder feeds every network; False gives each network its own (as FQL and the LPS reference)"""
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

    def ranges(self) -> dict[str, tuple[bool, str]]:
        """field -> (its value is allowed, what is allowed)"""
        return {
            "horizon": (self.horizon >= 1, "at least 1"),
            "frame_stack": (self.frame_stack >= 1, "at least 1"),
            "augment_prob": (0.0 <= self.augment_prob <= 1.0, "in [0, 1]"),
            "augment_pad": (self.augment_pad >= 0, "at least 0"),
            "discount": (0.0 < self.discount <= 1.0, "in (0, 1]"),
            "lr": (self.lr > 0.0, "positive"),
            "tau": (0.0 < self.tau <= 1.0, "in (0, 1]"),
            "critic_hidden_dims": (all(w >= 1 for w in self.critic_hidden_dims), "widths of at least 1"),
            "critic_ensemble": (self.critic_ensemble >= 1, "at least 1"),
        }


class ChunkedActorCritic(nn.Module):
    """Encoder(s) + critic ensemble + target critic over flattened action chunks of `horizon` actions."""

    policy_roles: tuple[str, ...] = ()
    """networks of the agent's policy that read state features"""
    shared_encoder_losses: tuple[str, ...] = ("critic",)
    """roles whose losses update the shared encoder"""

    def __init__(self, config: ActorCriticConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__()
        self.config = config
        self.obs_spec = obs_spec
        self.action_dim = action_dim
        self.chunk_dim = action_dim * config.horizon
        self.encoder_roles = ("critic", *self.policy_roles)
        if config.shared_encoder:
            self.encoder = build_encoder(config.encoder, obs_spec, config.encoder_weights)
        else:
            self.encoders = nn.ModuleDict(
                {role: build_encoder(config.encoder, obs_spec, config.encoder_weights) for role in self.encoder_roles}
            )
            self.target_encoder = copy.deepcopy(self.encoders["critic"]).requires_grad_(False)
        use_augmentation = self.input_encoder.is_image and config.augment_prob > 0
        self.augment = RandomShift(config.augment_pad, config.augment_prob) if use_augmentation else None
        self.feature_dim = self.input_encoder.feature_dim
        self.critic = CriticEnsemble(
            self.feature_dim,
            self.chunk_dim,
            config.critic_hidden_dims,
            config.critic_ensemble,
            config.critic_layer_norm,
        )
        # The target critic is a Polyak copy. Its parameters never require grad, so no gradient is computed or
        # all-reduced for them; every process updates them identically from identical weights.
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer(
            "discounts", config.discount ** torch.arange(config.horizon, dtype=torch.float32), persistent=False
        )
        # The agent works on actions in [-1, 1]; these bounds (the dataset's, for robot data) map them back to
        # the robot's units in `act`. Persistent buffers, so they travel with every checkpoint.
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))
        self._compiled_act = None  # see compile_act

    def set_action_bounds(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.action_low.copy_(torch.as_tensor(low, dtype=torch.float32))
        self.action_high.copy_(torch.as_tensor(high, dtype=torch.float32))

    def set_state_statistics(self, mean: dict, std: dict) -> None:
        """Standardise proprioception (per key) in every encoder that reads named observations."""
        encoders = [self.encoder] if self.config.shared_encoder else [*self.encoders.values(), self.target_encoder]
        for encoder in encoders:
            encoder.set_state_statistics(mean, std)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Robot units -> [-1, 1] per dimension; a dimension that never varies maps to 0."""
        span = self.action_high - self.action_low
        scaled = 2 * (actions - self.action_low) / torch.where(span > 0, span, 1.0) - 1
        return torch.where(span > 0, scaled, 0.0)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.action_low + (actions + 1) * (self.action_high - self.action_low) / 2

    @property
    def input_encoder(self) -> nn.Module:
        """The encoder whose `preprocess` and `image_keys` describe the inputs (all encoders agree on them)."""
        return self.encoder if self.config.shared_encoder else self.encoders["critic"]

    def policy(self, features: Features) -> torch.Tensor:
        """The agent's action chunk (B, chunk_dim) for state features; differentiable where the agent needs it."""
        raise NotImplementedError

    def _encode(self, inputs, roles: tuple[str, ...]) -> Features:
        if self.config.shared_encoder:
            features = self.encoder(inputs)
            return {role: features for role in roles}
        return {role: self.encoders[role](inputs) for role in roles}

    def encode(self, observations) -> Features:
        """Features per role of stored observations (no augmentation, no target)."""
        return self._encode(self.input_encoder.preprocess(observations), self.encoder_roles)

    def draw_random_inputs(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Every random number one update uses, drawn on the device from `generator` (the sampler's, whose
        state is checkpointed); `forward` reads them from `batch["random"]`. Drawing them apart makes the update
        a deterministic function of its batch: it compiles as one graph and resumes bit-exactly. Here: the
        random shifts of the images, if any; agents add their own."""
        if self.augment is None:
            return {}
        return {"shifts": self.augment.draw_transition(batch_size, self.input_encoder.image_keys, device, generator)}

    def encode_transition(self, batch: Batch) -> tuple[Features, Features]:
        """Features per role of s_t (with gradient where that role's loss trains the encoder) and of s_{t+h}
        for the policy roles and 'target' (without gradient: they only feed the TD target). Both views share
        one random shift per transition."""
        obs = self.input_encoder.preprocess(batch["observations"])
        next_obs = self.input_encoder.preprocess(batch["next_observations"])
        if self.augment is not None:
            obs, next_obs = self.augment.transition(batch["random"]["shifts"], obs, next_obs,
                                                    self.input_encoder.image_keys)
        features = self._encode(obs, self.encoder_roles)
        if self.config.shared_encoder:
            features = {role: f if role in self.shared_encoder_losses else f.detach() for role, f in features.items()}
        with torch.no_grad():
            if self.config.shared_encoder:
                next_features = dict.fromkeys((*self.policy_roles, "target"), self.encoder(next_obs))
            else:
                next_features = self._encode(next_obs, self.policy_roles) | {"target": self.target_encoder(next_obs)}
        return features, next_features

    def act(self, observations) -> torch.Tensor:
        """Action chunks (B, horizon, action_dim) in the dataset's units, for evaluation and deployment.

        On CUDA the first call compiles the computation (per batch size) and later calls replay it as a CUDA
        graph: at batch 1 the launches of a few dozen small kernels, not their arithmetic, are the cost.
        Elsewhere it runs eagerly unless `compile_act()` was called."""
        if self._compiled_act is None and self.action_low.device.type == "cuda":
            self.compile_act()
        if self._compiled_act is None:
            return self.act_eager(observations)
        with torch.inference_mode():
            return self._compiled_act(observations)

    def compile_act(self, cuda_graphs: bool | None = None, backend: str | Callable = "inductor") -> None:
        """Compile `act` as one graph (on CUDA, by default, replayed as CUDA graphs). On a CPU this takes
        seconds and makes a batch-1 chunk about 1.7x (state) to 2.6x (cameras) faster: worth it for deployment, not
        for short evaluations."""
        device = self.action_low.device
        use_graphs = (device.type == "cuda" if cuda_graphs is None else cuda_graphs) and backend == "inductor"
        # No guards on the networks' own attributes (a Python check of every parameter on each call, a fifth of
        # a CPU chunk's time): `act` reads the same modules whatever their mode, and weights change in place.
        compiled = compile_graph(self._act, device=device, backend=backend, cuda_graphs=use_graphs,
                                 skip_module_guards=True)
        # A CUDA graph's outputs are overwritten by its next replay: the caller gets its own copy.
        self._compiled_act = (lambda observations: compiled(observations).clone()) if use_graphs else compiled

    @torch.inference_mode()
    def act_eager(self, observations) -> torch.Tensor:
        """What `act` computes, never compiled (for debugging and comparisons)."""
        return self._act(observations)

    def _act(self, observations) -> torch.Tensor:
        actions = self.policy(self.encode(observations))
        return self.unnormalize_actions(actions.view(-1, self.config.horizon, self.action_dim))

    @torch.no_grad()
    def validation_metrics(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Offline metrics on held-out demonstrations (no simulator): the policy's action error against the
        demonstrated chunk (normalised units) and the critic's values of both."""
        features = self.encode(batch["observations"])
        demo = batch["actions"].flatten(1)
        actions = self.policy(features)
        q_demo = self.critic(features["critic"], demo)
        q_policy = self.critic(features["critic"], actions)
        return {
            "valid/action_mse": (actions - demo).pow(2).mean(),
            "valid/q_demo": q_demo.mean(),
            "valid/q_policy": q_policy.mean(),
            "valid/q_gap": (q_policy.min(dim=0).values - q_demo.min(dim=0).values).mean(),
        } | self.extra_validation_metrics(features, demo)

    def extra_validation_metrics(self, features: Features, demo: torch.Tensor) -> dict[str, torch.Tensor]:
        """Agent-specific offline metrics from the same features; none by default."""
        return {}

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
        """Polyak-average the critic (and its own encoder, if any) into their target copies."""
        targets, sources = list(self.target_critic.parameters()), list(self.critic.parameters())
        if not self.config.shared_encoder:
            targets += list(self.target_encoder.parameters())
            sources += list(self.encoders["critic"].parameters())
        torch._foreach_lerp_(targets, sources, self.config.tau)

    @staticmethod
    def latent_norm(z: torch.Tensor) -> torch.Tensor:
        """Mean latent norm divided by sqrt(d): 1 on the sphere."""
        return z.norm(dim=-1).mean() / math.sqrt(z.shape[-1])
