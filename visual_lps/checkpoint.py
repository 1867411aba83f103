"""Reading what the trainer wrote: a run folder or one of its checkpoints -> a ready agent."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from visual_lps.agents import AGENTS
from visual_lps.config import TrainConfig, coerce, load_yaml
from visual_lps.observations import spec_from_yaml

CHECKPOINT_PREFIX = "step_"


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a `.tmp` folder is an unfinished write)."""
    return sorted((run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*[0-9]"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def rotate_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0 keeps all); returns the deleted ones."""
    found = checkpoints(run_dir)
    old = found[:-keep_last] if keep_last > 0 else []
    for path in old:
        shutil.rmtree(path)
    return old


def weights_digest(module: torch.nn.Module) -> torch.Tensor:
    """SHA-256 of every parameter and buffer, as 8 int32 on the module's device: equal digests on all
    processes mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    words = torch.frombuffer(bytearray(digest.digest()), dtype=torch.int32)
    return words.to(next(module.parameters()).device)


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
