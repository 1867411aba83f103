"""Reading what the trainer wrote: a run folder or one of its checkpoints -> a ready agent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import yaml

from visual_lps.agents import AGENTS
from visual_lps.config import TrainConfig, coerce, load_yaml
from visual_lps.observations import spec_from_yaml

CHECKPOINT_PREFIX = "step_"


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*[0-9]"))
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or the latest checkpoint of a run folder."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        return path
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    raise FileNotFoundError(f"{path}: neither a checkpoint (no model.safetensors) nor a run folder with checkpoints")


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrainConfig, Any, dict]:
    """(agent in eval mode, train config, agent config, agent spec) from a run folder or checkpoint."""
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(path)
    config = load_yaml(ckpt / "config.yaml")
    spec = yaml.safe_load((ckpt / "agent_spec.yaml").read_text())
    train_cfg = TrainConfig(**coerce(TrainConfig, config["train"], str(ckpt / "config.yaml")))
    agent_cfg_cls, agent_cls = AGENTS[train_cfg.agent]
    agent_cfg = agent_cfg_cls(**coerce(agent_cfg_cls, config["agent"], str(ckpt / "config.yaml")))
    # The checkpoint holds the trained weights: pretrained encoder weights need not be found again.
    skeleton_cfg = dataclasses.replace(agent_cfg, encoder_weights="")
    agent = agent_cls(skeleton_cfg, spec_from_yaml(spec["obs_spec"]), int(spec["action_dim"]))
    agent.load_state_dict(load_file(str(ckpt / "model.safetensors"), device=str(device)))
    return agent.to(device).eval(), train_cfg, agent_cfg, spec
