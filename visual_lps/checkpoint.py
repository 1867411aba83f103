"""Checkpoints: writing them (atomically, with a manifest of every file), verifying them, finding the newest
complete one, and reading a run folder or one of its checkpoints back into a ready agent."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from visual_lps.agents import AGENTS
from visual_lps.config import TrainConfig, coerce, load_yaml
from visual_lps.observations import spec_from_yaml

if TYPE_CHECKING:
    from accelerate import Accelerator

CHECKPOINT_PREFIX = "step_"


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a `.tmp` folder is an unfinished write)."""
    return sorted((run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*[0-9]"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


MANIFEST = "manifest.json"
"""every file of a checkpoint with its size and SHA-256, written last"""


class IncompleteCheckpoint(ValueError):
    """A checkpoint whose files do not match its manifest (truncated, missing, altered); the message names it."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record the size and digest of every file in `folder`, as the last file written to it."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    tmp.rename(folder / MANIFEST)


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
    """A checkpoint folder as given (verified), or the newest complete checkpoint of a run folder (saying which
    newer ones were passed over, on stderr)."""
    path = Path(path)
    if (path / "model.safetensors").exists() or (path / MANIFEST).exists():
        verify_checkpoint(path)
        return path
    if (path / "checkpoints").is_dir() and checkpoints(path):
        latest, skipped = latest_complete_checkpoint(path)
        for reason in skipped:
            print(f"warning: {reason}; passed over", file=sys.stderr)
        if latest is None:
            raise IncompleteCheckpoint(f"{path}: no complete checkpoint ({len(skipped)} incomplete)")
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
    try:
        weights = load_file(str(ckpt / "model.safetensors"), device=str(device))
    except Exception as e:  # a damaged file of a checkpoint written before manifests
        raise IncompleteCheckpoint(f"checkpoint {ckpt}: cannot read model.safetensors ({e})") from None
    agent.load_state_dict(weights)
    return agent.to(device).eval(), train_cfg, agent_cfg, spec


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (its partial folder is removed, earlier checkpoints are kept)."""


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep_last: int) -> Path:
    """Accelerate's save_state into a temporary folder, then the config and a manifest of every file's size
    and digest (written last), then a rename: a killed write leaves the previous checkpoints as they were, and
    a file damaged later is caught when the checkpoint is loaded. Older checkpoints beyond `keep_last` are then
    deleted."""
    final = run_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.copy(run_dir / "config.yaml", tmp / "config.yaml")
            shutil.copy(run_dir / "agent_spec.yaml", tmp / "agent_spec.yaml")
            write_manifest(tmp)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError from its zip writer
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(run_dir).free
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or free < 1 << 20:
            raise CheckpointWriteError(f"no space left on device at {run_dir} ({free:,} bytes free): checkpoint "
                                       f"{final.name} was not written; the earlier checkpoints are kept") from e
        raise CheckpointWriteError(f"could not write checkpoint {final} ({e}); the earlier checkpoints are kept") from e
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        rotate_checkpoints(run_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def check_ranks_in_sync(accelerator: Accelerator, module: torch.nn.Module) -> None:
    """Every process must hold bit-identical weights (the update averages the gradients, every process
    applies the same update): compare a digest of all weights across processes."""
    if accelerator.num_processes == 1:
        return
    digests = accelerator.gather(weights_digest(module)[None]).cpu()
    if not (digests == digests[0]).all():
        raise RuntimeError("the processes' weights differ: distributed training is out of sync")
