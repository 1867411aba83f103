"""Gradient routing checks shared by the agents' tests: which loss reaches which parameters."""

from __future__ import annotations

import torch


def reaches(loss: torch.Tensor, agent: torch.nn.Module, parts: dict[str, torch.nn.Module]) -> set[str]:
    """The names of `parts` whose parameters all get a nonzero gradient from `loss`; raises if a part gets a
    gradient on only some of its parameters (a half-routed network)."""
    agent.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    reached = set()
    for name, module in parts.items():
        grads = [p.grad for p in module.parameters()]
        if all(g is None for g in grads):
            continue
        assert all(g is not None for g in grads), f"{name}: only some parameters get a gradient"
        if sum(g.abs().sum() for g in grads) > 0:
            reached.add(name)
    return reached


def image_batch(agent: torch.nn.Module, batch_size: int = 8) -> dict:
    frames = torch.randint(0, 256, (batch_size, *agent.obs_spec), dtype=torch.uint8)
    h, a = agent.config.horizon, agent.action_dim
    return {"observations": frames, "next_observations": frames.flip(0), "actions": torch.rand(batch_size, h, a) * 2 - 1,
            "rewards": -torch.ones(batch_size, h), "masks": torch.ones(batch_size, h),
            "random": agent.draw_random_inputs(batch_size, torch.device("cpu"))}
