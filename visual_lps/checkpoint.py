"""Checkpoints: writing them (atomically, with a manifest of every file), verifying them, finding the newest
complete one, and reading a run folder or one of its checkpoints back into a ready agent.

A checkpoint is data, never code: our own state (step, sampler generators) is a safetensors file, and every
pickle Accelerate writes (optimizer, RNG states) must load with `weights_only=True` before a resume loads it."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import yaml
from safetensors import SafetensorError

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


def check_data_only(folder: Path) -> None:
    """CheckpointError naming the first pickle of `folder` (optimizer.bin, random_states_N.pkl, ...) that does
    not load as plain data (`weights_only=True`, Accelerate's allow-list): a planted pickle would run code when
    loaded, and Accelerate silently skips RNG states it cannot load."""
    from accelerate.utils.other import load

    for path in sorted(p for p in folder.iterdir() if p.suffix in (".pkl", ".bin")):
        try:
            load(path, map_location="cpu")
        except Exception as e:  # the weights-only unpickler's refusal (its reason after its advice), or damage
            text, refusal = str(e), "WeightsUnpickler error: "
            reason = text.split(refusal, 1)[1].split(". ")[0] if refusal in text else one_line(e)
            raise CheckpointError(f"checkpoint {folder}: {path.name} is not plain data, refused ({reason})") from None


def save_training_state(path: Path, step: int, generators: list[torch.Tensor]) -> None:
    """The step and every process's sampler generator state (rank order), as tensors."""
    from safetensors.torch import save_file

    save_file({"step": torch.tensor([step], dtype=torch.int64), "sampler_generators": torch.stack(generators)},
              str(path))


def load_training_state(folder: Path) -> tuple[int, list[torch.Tensor]]:
    """(step, sampler generator states) of a checkpoint; from Accelerate's custom-state pickles, loaded as plain
    data, for checkpoints written before TRAINING_STATE existed."""
    from safetensors.torch import load_file

    try:
        if (folder / TRAINING_STATE).exists():
            state = load_file(str(folder / TRAINING_STATE))
            # One tensor each: Generator.set_state crashes on a row of the stacked tensor (a view at an offset).
            return int(state["step"][0]), [row.clone() for row in state["sampler_generators"]]
        progress = torch.load(folder / "custom_checkpoint_0.pkl", map_location="cpu", weights_only=True)
        sampler = torch.load(folder / "custom_checkpoint_1.pkl", map_location="cpu", weights_only=True)
        return int(progress["step"]), list(sampler["generators"])
    except (OSError, KeyError, TypeError, IndexError, SafetensorError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {folder}: no readable training state ({type(e).__name__}: {e})") from None


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


def checkpoint_bytes(module: torch.nn.Module) -> int:
    """About the size of one checkpoint: every weight and buffer, plus Adam's two moments of each trained one."""
    def size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    return (sum(size(t) for t in module.state_dict().values())
            + 2 * sum(size(p) for p in module.parameters() if p.requires_grad))


def space_warning(run_dir: Path, each: int, first_step: int, steps: int, save_every: int, keep_last: int) -> str | None:
    """A warning when the checkpoints a run will keep (one every `save_every` steps and one at the end, up to
    `keep_last` of them) need more than the free space at `run_dir`, or None."""
    planned = steps // save_every - first_step // save_every + (steps % save_every != 0)
    count = min(planned, keep_last) if keep_last else planned
    need, free = count * each, shutil.disk_usage(run_dir).free
    if need <= free:
        return None
    return (f"warning: the {count} checkpoints this run will keep (about {each / 1e6:,.1f} MB each: weights and "
            f"Adam state) need about {need / 1e9:,.2f} GB, but {run_dir} has {free / 1e9:,.2f} GB free; "
            f"give --keep-last K to keep only the newest K, or a larger --save-every")


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
    config_file, spec_file, weights_file = ckpt / "config.yaml", ckpt / "agent_spec.yaml", ckpt / "model.safetensors"
    try:
        config = load_yaml(config_file)
        if not config["train"] or not config["agent"]:
            raise ValueError("no 'train' and 'agent' sections (the checkpoint's run config is empty)")
        train_cfg = TrainConfig(**coerce(TrainConfig, config["train"], "train section"))
        if train_cfg.agent not in AGENTS:
            raise ValueError(f"unknown agent {train_cfg.agent!r}; available: {', '.join(AGENTS)}")
        agent_cfg_cls, agent_cls = AGENTS[train_cfg.agent]
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
    except RuntimeError as e:
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


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (its partial folder is removed, earlier checkpoints are kept)."""


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep_last: int,
                    generators: list[torch.Tensor]) -> Path:
    """Accelerate's save_state into a temporary folder, then our training state (`step`, the sampler
    `generators` of every process), the config and a manifest of every file's size and digest (written last),
    then a rename: a killed write leaves the previous checkpoints as they were, and a file damaged later is
    caught when the checkpoint is loaded. Older checkpoints beyond `keep_last` are then deleted."""
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
            save_training_state(tmp / TRAINING_STATE, step, generators)
            write_manifest(tmp)
    # torch reports a full disk as a RuntimeError from its zip writer, safetensors as a SafetensorError
    except (OSError, RuntimeError, SafetensorError) as e:
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
