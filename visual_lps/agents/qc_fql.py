"""QC-FQL (flow Q-learning with action chunking), the paper's behaviour-regularised baseline.

A 10-step flow-matching BC policy learns the data; a one-step policy mu(s, eps) maximises Q while being
distilled towards the flow's action for the same noise, with weight alpha: the behaviour constraint whose
per-environment tuning LPS removes. Critic: chunked TD with the one-step policy in the target.

Gradient routing (shared encoder): critic and BC-flow losses train it; the one-step policy reads detached
features and calls the critic frozen; the distillation target is computed without gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from visual_lps.agents.actor_critic import ActorCriticAgent, CriticConfig, normalized_q_loss
from visual_lps.agents.base import Batch, Features, frozen_call
from visual_lps.agents.flow_bc import FlowFields
from visual_lps.nn.mlp import MLP
from visual_lps.observations import ObsSpec

@dataclass
class QCFQLConfig(CriticConfig, FlowFields):
    """QC-FQL defaults, from its public reference code: the critic's, the BC flow's and the one-step policy's."""

    onestep_hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    """hidden widths of the one-step policy MLP"""
    alpha: float | None = None
    """distillation weight; unset: the task's published value (visual_lps.tasks: cube-single 30, cube-double 3, scene 1, puzzle-3x3 3, puzzle-4x4 10)"""
    critic_target: str = "mean"
    """how the TD target combines the target critics: 'min' (clipped double Q) or 'mean' (QC-FQL's)"""

    def for_task(self, task: str) -> None:
        """The task's defaults (visual_lps.tasks) fill alpha where it has a published value; elsewhere it is given."""
        if self.alpha is None:
            raise ValueError(f"qc-fql has no published alpha for task {task!r}: give --alpha")

    def ranges(self) -> dict[str, tuple[bool, str]]:
        return super().ranges() | self.flow_ranges() | {
            "onestep_hidden_dims": (all(w >= 1 for w in self.onestep_hidden_dims), "widths of at least 1"),
            "alpha": (self.alpha is None or self.alpha >= 0.0, "at least 0"),
        }


class QCFQLAgent(ActorCriticAgent):
    """BC flow + one-step policy mu(s, eps) + action critic."""

    roles = ("critic", "bc_flow", "actor")
    encoder_trained_by = ("critic", "bc_flow")
    next_roles = ("actor", "target")
    noise_modules = ("bc_flow",)

    def __init__(self, config: QCFQLConfig, obs_spec: ObsSpec, action_dim: int):
        super().__init__(config, obs_spec, action_dim)
        if config.alpha is None:
            raise ValueError("qc-fql: alpha is unset (the task's defaults, visual_lps.tasks, hold its value)")
        self.bc_flow = config.build_flow_policy(self.feature_dim, self.chunk_dim, noise="normal")
        self.actor = MLP(self.feature_dim + self.chunk_dim, config.onestep_hidden_dims, self.chunk_dim)

    def one_step(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """mu(s, eps), unclipped (the distillation compares it before clipping, as the reference does)."""
        return self.actor(torch.cat([features, noise], dim=-1))

    def policy_actions(self, features: Features, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = self.bc_flow.sample_noise(features["actor"].shape[0], features["actor"].device)
        return self.one_step(features["actor"], noise).clamp(-1.0, 1.0)

    def draw_random_inputs(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> dict:
        """The image shifts, the BC flow's noise and times, and the noise of the distillation and the target."""
        return super().draw_random_inputs(batch_size, device, generator) | {
            "distill": torch.randn(batch_size, self.chunk_dim, device=device, generator=generator),
            "next": torch.randn(batch_size, self.chunk_dim, device=device, generator=generator),
        }

    def actor_loss(self, features: Features, noise: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """alpha * ||mu(s, eps) - flow(s, eps)||^2 - mean Q(s, clip(mu)) / stopgrad(mean |Q|); only mu learns."""
        with torch.no_grad():
            target = self.bc_flow.sample(features["bc_flow"].detach(), noise)
        actions = self.one_step(features["actor"].detach(), noise)
        distill = (actions - target).pow(2).mean()
        q = frozen_call(self.critic, features["critic"].detach(), actions.clamp(-1.0, 1.0)).mean(dim=0)
        q_loss = normalized_q_loss(q)
        loss = self.config.alpha * distill + q_loss
        return loss, {"actor/loss": loss.detach(), "actor/distill": distill.detach(), "actor/q": q.detach().mean()}

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, next_features = self.encode_transition(batch)
        random = batch["random"]
        with torch.no_grad():
            next_actions = self.policy_actions(next_features, random["next"])
        critic_loss, metrics = self.critic_loss(features["critic"], next_features["target"], batch, next_actions)
        bc_loss, bc_metrics = self.bc_flow.loss(features["bc_flow"], batch["actions"].flatten(1), random["bc_flow"])
        actor_loss, actor_metrics = self.actor_loss(features, random["distill"])
        return critic_loss + bc_loss + actor_loss, metrics | bc_metrics | actor_metrics
