"""What every agent over action chunks has: its encoder set, its data needs, action scaling and `act`.
Agents with a critic add it through `visual_lps.agents.actor_critic`; flow BC has none.

Training contract, chosen so that one gradient computation and one all-reduce serve all networks
(`visual_lps.training.update.UpdateStep`): `forward(batch)` returns the *sum* of all losses and a dict of metrics; it
uses no randomness of its own (what it needs, `draw_random_inputs` drew into `batch["random"]`) and never
syncs with the host, so the whole update compiles as one graph. Gradient routing (which loss may update which
parameters) is done inside the agent with `detach` and `frozen_call`, never by toggling `requires_grad`.
After each optimiser step the update calls `update_targets()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from visual_lps.nn.compile_options import CompiledOrEager, compile_graph
from visual_lps.data.chunks import DataNeeds
from visual_lps.nn.encoder_set import EncoderSet, Features
from visual_lps.observations import ObsSpec

Batch = dict[str, Any]
"""Tensors by name (observations may be a dict of tensors), and `random`: what `draw_random_inputs` drew."""

__all__ = ["AgentConfig", "Batch", "ChunkedAgent", "DataNeeds", "Features", "detached_params", "frozen_call"]


def detached_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters, detached: a call on them passes gradients to its inputs only."""
    return {name: p.detach() for name, p in module.named_parameters()}


def frozen_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """Call `module` with its parameters detached: gradients flow to the inputs only."""
    return torch.func.functional_call(module, detached_params(module), args)


@dataclass
class AgentConfig:
    """Fields every chunked agent has."""

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
    lr: float = 3e-4
    """Adam learning rate for all networks"""

    @property
    def data_needs(self) -> DataNeeds:
        return DataNeeds(horizon=self.horizon, frame_stack=self.frame_stack)

    def for_task(self, task: str) -> None:
        """Fill defaults that depend on the task (`--task` name); none here."""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        """field -> (its value is allowed, what is allowed)"""
        return {
            "horizon": (self.horizon >= 1, "at least 1"),
            "frame_stack": (self.frame_stack >= 1, "at least 1"),
            "augment_prob": (0.0 <= self.augment_prob <= 1.0, "in [0, 1]"),
            "augment_pad": (self.augment_pad >= 0, "at least 0"),
            "lr": (self.lr > 0.0, "positive"),
        }


class ChunkedAgent(nn.Module):
    """An encoder set and a policy over flattened action chunks of `horizon` actions in [-1, 1]."""

    roles: tuple[str, ...] = ()
    """the networks that read state features (each gets its own encoder with `shared_encoder=False`)"""
    encoder_trained_by: tuple[str, ...] = ()
    """roles whose losses update the shared encoder"""
    next_roles: tuple[str, ...] = ()
    """roles whose features of s_{t+h} the losses use ('target': the TD target's view)"""
    target_role: str | None = None
    """the role whose per-role encoder has a Polyak target copy"""
    progress_metrics: tuple[str, ...] = ()
    """metrics shown on the training progress bar"""
    noise_modules: tuple[str, ...] = ()
    """submodules whose loss draws its own noise (`draw_noise`): drawn into batch["random"][name]"""

    def __init__(self, config: AgentConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__()
        self.config = config
        self.obs_spec = obs_spec
        self.action_dim = action_dim
        self.chunk_dim = action_dim * config.horizon
        self.encoders = EncoderSet(
            config.encoder, obs_spec, config.encoder_weights, self.roles, shared=config.shared_encoder,
            trained_by=self.encoder_trained_by, target_role=self.target_role,
            augment_prob=config.augment_prob, augment_pad=config.augment_pad,
        )
        self.feature_dim = self.encoders.feature_dim
        # The agent works on actions in [-1, 1]; these bounds (the dataset's, for robot data) map them back to
        # the robot's units in `act`. Persistent buffers, so they travel with every checkpoint.
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))
        self._compiled_act: CompiledOrEager | None = None  # see compile_act
        self.compile_act_on_cuda = True
        """whether `act` compiles itself on its first call on CUDA (a run with --no-compile turns it off)"""

    @property
    def data_needs(self) -> DataNeeds:
        return self.config.data_needs

    def set_action_bounds(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.action_low.copy_(torch.as_tensor(low, dtype=torch.float32))
        self.action_high.copy_(torch.as_tensor(high, dtype=torch.float32))

    def set_state_statistics(self, mean: dict, std: dict) -> None:
        """Standardise proprioception (per key) in every encoder that reads named observations."""
        self.encoders.set_state_statistics(mean, std)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Robot units -> [-1, 1] per dimension; a dimension that never varies maps to 0."""
        span = self.action_high - self.action_low
        scaled = 2 * (actions - self.action_low) / torch.where(span > 0, span, 1.0) - 1
        return torch.where(span > 0, scaled, 0.0)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.action_low + (actions + 1) * (self.action_high - self.action_low) / 2

    def policy_actions(self, features: Features) -> torch.Tensor:
        """The agent's action chunk (B, chunk_dim) for state features; differentiable where the agent needs it."""
        raise NotImplementedError

    def encode(self, observations) -> Features:
        """Features per role of stored observations (no augmentation, no target view)."""
        return self.encoders(observations)

    def encode_transition(self, batch: Batch) -> tuple[Features, Features]:
        """Features of s_t per role (gradient where the role trains the encoder) and of s_{t+h} for
        `next_roles` (no gradient), both through one random shift per transition."""
        return self.encoders.transition(batch, self.next_roles)

    def draw_random_inputs(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Every random number one update uses, drawn on the device from `generator` (the sampler's, whose
        state is checkpointed); `forward` reads them from `batch["random"]`. Drawing them apart makes the update
        a deterministic function of its batch: it compiles as one graph and resumes bit-exactly. Here: the
        random shifts of the images, if any, and the noise of each of `noise_modules`; agents add their own."""
        noise = {name: getattr(self, name).draw_noise(batch_size, device, generator) for name in self.noise_modules}
        return self.encoders.draw_random_inputs(batch_size, device, generator) | noise

    def act(self, observations) -> torch.Tensor:
        """Action chunks (B, horizon, action_dim) in the dataset's units, for evaluation and deployment.

        On CUDA the first call compiles the computation (per batch size) and later calls replay it as a CUDA
        graph: at batch 1 the launches of a few dozen small kernels, not their arithmetic, are the cost.
        Elsewhere it runs eagerly unless `compile_act()` was called. If compiling fails, it says why once and runs
        eagerly."""
        if self._compiled_act is None and self.compile_act_on_cuda and self.action_low.device.type == "cuda":
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
        compiled = compile_graph(self.act_traceable, device=device, backend=backend, cuda_graphs=use_graphs,
                                 skip_module_guards=True)
        # A CUDA graph's outputs are overwritten by its next replay: the caller gets its own copy.
        graphed = (lambda observations: compiled(observations).clone()) if use_graphs else compiled
        self._compiled_act = CompiledOrEager(graphed, self.act_traceable, "`act`")

    @torch.inference_mode()
    def act_eager(self, observations) -> torch.Tensor:
        """What `act` computes, never compiled (for debugging and comparisons)."""
        return self.act_traceable(observations)

    def act_traceable(self, observations) -> torch.Tensor:
        """What `act` computes, as plain tensor operations (no inference mode, no compilation): what
        `compile_act` compiles and `visual_lps.deploy.export` traces."""
        actions = self.policy_actions(self.encode(observations))
        return self.unnormalize_actions(actions.view(-1, self.config.horizon, self.action_dim))

    @torch.no_grad()
    def validation_metrics(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Offline metrics on held-out demonstrations (no simulator): the policy's action error against the
        demonstrated chunk (normalised units), and what the agent adds."""
        features = self.encode(batch["observations"])
        demo = batch["actions"].flatten(1)
        actions = self.policy_actions(features)
        return {"valid/action_mse": (actions - demo).pow(2).mean()} | self.extra_validation_metrics(
            features, demo, actions)

    def extra_validation_metrics(
        self, features: Features, demo: torch.Tensor, actions: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Agent-specific offline metrics from the same features and policy actions; none by default."""
        return {}

    def update_targets(self) -> None:
        """Move target copies towards what they follow; an agent without targets (as here) has none to move."""

    @staticmethod
    def latent_norm(z: torch.Tensor) -> torch.Tensor:
        """Mean latent norm divided by sqrt(d): 1 on the sphere."""
        return z.norm(dim=-1).mean() / math.sqrt(z.shape[-1])
