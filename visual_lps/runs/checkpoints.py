"""Reading checkpoints: verifying them against their manifest, finding the newest complete one, and reading a run
folder or one of its checkpoints back into a ready agent, with torch and the core alone (writing them is the
trainer's: `visual_lps.training.checkpointing`).

A checkpoint is data, never code: weights and our own state are safetensors, the config is YAML."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from safetensors import SafetensorError

from visual_lps.agents import AGENTS
from visual_lps.config import TrainConfig, coerce, load_yaml
from visual_lps.observations import spec_from_yaml
from visual_lps.runs.folder import CHECKPOINT_PREFIX, CONFIG, SPEC, RunFolder

def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a `.tmp` folder is an unfinished write)."""
    return sorted(RunFolder(run_dir).checkpoints.glob(f"{CHECKPOINT_PREFIX}*[0-9]"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


MANIFEST = "manifest.json"
"""every file of a checkpoint with its size and SHA-256, written last"""


TRAINING_STATE = "training_state.safetensors"
"""the step and the samplers' generator states, as tensors (no pickle)"""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, foreign, malformed, not data); the message names the file."""


class IncompleteCheckpoint(CheckpointError):
    """A checkpoint whose files do not match its manifest (truncated, missing, altered); the message names it."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(folder: Path) -> None:
    """IncompleteCheckpoint naming the checkpoint and its first bad file. A checkpoint written before manifests
    existed (none in the folder) is taken as it is."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        if (folder / "model.safetensors").exists():
            return
        raise IncompleteCheckpoint(f"checkpoint {folder} is incomplete: it has no {MANIFEST} and no weights")
    try:
        entries = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise IncompleteCheckpoint(f"checkpoint {folder} is incomplete: {MANIFEST} is unreadable ({e})") from None
    malformed = manifest_problem(entries)
    if malformed:
        raise IncompleteCheckpoint(f"checkpoint {folder} is damaged: {MANIFEST} {malformed}")
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            raise IncompleteCheckpoint(f"checkpoint {folder} is incomplete: {name} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise IncompleteCheckpoint(f"checkpoint {folder} is incomplete: {name} has {size:,} bytes, "
                                       f"{entry['size']:,} were written")
        if file_sha256(path) != entry["sha256"]:
            raise IncompleteCheckpoint(f"checkpoint {folder} is damaged: {name} differs from what was written")


def manifest_problem(entries: Any) -> str | None:
    """What makes parsed JSON no manifest (a list, an entry without a size, a path outside the folder), or None."""
    if not isinstance(entries, dict):
        return f"is a JSON {type(entries).__name__}, not an object of files"
    for name, entry in entries.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"names a file outside the checkpoint: {name!r}"
        if not (isinstance(entry, dict) and type(entry.get("size")) is int and isinstance(entry.get("sha256"), str)):
            return f"entry {name!r} has no size and sha256"
    return None


def latest_complete_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and why each newer one was passed over."""
    skipped = []
    for folder in reversed(checkpoints(run_dir)):
        try:
            verify_checkpoint(folder)
        except IncompleteCheckpoint as e:
            skipped.append(str(e))
            continue
        return folder, skipped
    return None, skipped


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given (verified), or the newest complete checkpoint of a run folder (saying which
    newer ones were passed over, on stderr)."""
    path = Path(path)
    if (path / "model.safetensors").exists() or (path / MANIFEST).exists():
        verify_checkpoint(path)
        return path
    if RunFolder(path).checkpoints.is_dir() and checkpoints(path):
        latest, skipped = latest_complete_checkpoint(path)
        for reason in skipped:
            print(f"warning: {reason}; passed over", file=sys.stderr)
        if latest is None:
            raise IncompleteCheckpoint(f"{path}: no complete checkpoint ({len(skipped)} incomplete)")
        return latest
    raise CheckpointError(f"{path}: neither a checkpoint (no model.safetensors) nor a run folder with checkpoints")


class LoadedCheckpoint(NamedTuple):
    agent: torch.nn.Module
    """in eval mode, on the device asked for"""
    train_cfg: TrainConfig
    agent_cfg: Any
    spec: dict
    """agent_spec.yaml: obs_spec, action_dim, dataset, sparse"""
    path: Path
    """the checkpoint folder read (verified once, here)"""


def load_agent(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """A run folder's newest complete checkpoint, or a checkpoint folder, as a ready agent. Whatever is wrong
    with it (damaged files, a malformed config or spec, another agent's weights) is one CheckpointError naming
    the file, for tools to print as one line."""
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(path)
    config_file, spec_file, weights_file = ckpt / CONFIG, ckpt / SPEC, ckpt / "model.safetensors"
    try:
        config = load_yaml(config_file)
        if not config["train"] or not config["agent"]:
            raise ValueError("no 'train' and 'agent' sections (the checkpoint's run config is empty)")
        train_cfg = TrainConfig(**coerce(TrainConfig, config["train"], "train section"))
        if train_cfg.agent not in AGENTS:
            raise ValueError(f"unknown agent {train_cfg.agent!r}; available: {', '.join(AGENTS)}")
        registered = AGENTS[train_cfg.agent]
        agent_cfg_cls, agent_cls = registered.config, registered.agent
        agent_cfg = agent_cfg_cls(**coerce(agent_cfg_cls, config["agent"], "agent section"))
    except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{config_file}: {one_line(e)}") from None
    try:
        spec = yaml.safe_load(spec_file.read_text())
        obs_spec, action_dim = spec_from_yaml(spec["obs_spec"]), int(spec["action_dim"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{spec_file}: not an agent spec with obs_spec and action_dim ({one_line(e)})") from None
    try:
        # The checkpoint holds the trained weights: pretrained encoder weights need not be found again.
        agent = agent_cls(dataclasses.replace(agent_cfg, encoder_weights=""), obs_spec, action_dim)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{config_file} and {spec_file} do not make a {train_cfg.agent} agent: "
                              f"{one_line(e)}") from None
    try:
        weights = load_file(str(weights_file))
    except (OSError, SafetensorError) as e:  # a damaged file of a checkpoint written before manifests
        raise IncompleteCheckpoint(f"checkpoint {ckpt}: cannot read model.safetensors ({e})") from None
    try:
        agent.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(f"{weights_file}: not the weights of the {train_cfg.agent} agent its config describes "
                              f"({mismatch(agent.state_dict(), weights)})") from None
    return LoadedCheckpoint(agent.to(device).eval(), train_cfg, agent_cfg, spec, ckpt)


def one_line(error: BaseException) -> str:
    """An exception's message as one line (a YAML error's spans several: its problem and where)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        return f"not valid YAML: {error.problem} (line {error.problem_mark.line + 1})"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """The first few missing, unexpected and differently shaped tensors of a state dict."""
    def few(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k} {tuple(found[k].shape)} (expected {tuple(expected[k].shape)})"
              for k in sorted(set(expected) & set(found)) if found[k].shape != expected[k].shape]
    parts = [f"missing {few(missing)}" if missing else "", f"unexpected {few(unexpected)}" if unexpected else "",
             f"shaped {few(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)
