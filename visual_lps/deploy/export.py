"""A trained policy as one file that runs with torch alone: `torch.export` of the encoder, the policy networks
and the normalisers (action bounds, state statistics), batch 1, observations as stored (uint8 frames, float
proprioception) in, a chunk (1, horizon, action_dim) in the robot's units out.

    program = torch.export.load("policy.pt2").module()
    chunk = program(observation)            # a tensor, or a dict of tensors, each with a leading batch of 1

With `compiled=True` the file is an AOTInductor package instead: the same program compiled ahead of time to
machine code for this kind of machine (CPU or GPU), loaded with `torch._inductor.aoti_load_package(path)` and
called the same way; it skips the Python interpreter of the graph, which is most of a state chunk's time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from visual_lps.files import atomic_write
from visual_lps.observations import ObsSpec, map_obs


class ActModule(nn.Module):
    """What `agent.act` computes, as a module whose forward takes the observation (what torch.export traces)."""

    def __init__(self, agent: nn.Module):
        super().__init__()
        self.agent = agent

    def forward(self, observations):
        return self.agent.act_traceable(observations)


def example_observation(spec: ObsSpec, device: torch.device | str = "cpu"):
    """Zeros of the policy's spec with a batch of 1 (uint8 for camera frames, float32 otherwise)."""
    def zeros(shape: tuple[int, ...]) -> torch.Tensor:
        dtype = torch.uint8 if len(shape) >= 3 else torch.float32
        return torch.zeros((1, *shape), dtype=dtype, device=device)

    return map_obs(zeros, spec)


def export_policy(agent: nn.Module, path: str | Path, compiled: bool = False) -> Path:
    """Export `agent` (in eval mode, on its device) to `path`, atomically (`visual_lps.files`)."""
    path = Path(path)
    device = agent.action_low.device
    module = ActModule(agent.eval())
    example = example_observation(agent.obs_spec, device)
    with torch.no_grad():
        program = torch.export.export(module, (example,))
    with atomic_write(path, keep_suffix=True) as written:  # AOTInductor wants a .pt2 name
        if compiled:
            torch._inductor.aoti_compile_and_package(program, package_path=str(written))
        else:
            torch.export.save(program, written)
    return path
