"""Writing checkpoints: atomically (a temporary folder renamed when complete, a manifest of every file's size and
SHA-256 written last), rotating them, checking that every process holds the same weights, and the training
state a resume restores (the step and the samplers' generators, as tensors).

A checkpoint is data, never code: our own state is a safetensors file, and every pickle Accelerate writes
(optimizer, RNG states) must load with `weights_only=True` before a resume loads it."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError

from visual_lps.runs.checkpoints import (
    MANIFEST,
    TRAINING_STATE,
    CheckpointError,
    checkpoints,
    file_sha256,
    one_line,
)
from visual_lps.files import write_text_atomic
from visual_lps.runs.folder import CONFIG, SPEC, RunFolder

if TYPE_CHECKING:
    from accelerate import Accelerator


def write_manifest(folder: Path) -> None:
    """Record the size and digest of every file in `folder`, as the last file written to it."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    write_text_atomic(folder / MANIFEST, json.dumps(entries, indent=1))


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


def save_training_state(path: Path, step: int, generators: list[torch.Tensor],
                        counters: dict[str, int] | None = None) -> None:
    """The step, every process's sampler generator state (rank order) and the online phase's `counters`
    (environment steps, episodes), as tensors."""
    from safetensors.torch import save_file

    tensors = {"step": torch.tensor([step], dtype=torch.int64), "sampler_generators": torch.stack(generators)}
    tensors |= {name: torch.tensor([value], dtype=torch.int64) for name, value in (counters or {}).items()}
    save_file(tensors, str(path))


def load_counters(folder: Path, names: tuple[str, ...]) -> dict[str, int]:
    """The online counters `names` of a checkpoint's training state (0 where it holds none: an offline run)."""
    from safetensors.torch import load_file

    if not (folder / TRAINING_STATE).exists():
        return dict.fromkeys(names, 0)
    state = load_file(str(folder / TRAINING_STATE))
    return {name: int(state[name][0]) if name in state else 0 for name in names}


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


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (its partial folder is removed, earlier checkpoints are kept)."""


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep_last: int,
                    generators: list[torch.Tensor], counters: dict[str, int] | None = None) -> Path:
    """Accelerate's save_state into a temporary folder, then our training state (`step`, the sampler
    `generators` of every process), the config and a manifest of every file's size and digest (written last),
    then a rename: a killed write leaves the previous checkpoints as they were, and a file damaged later is
    caught when the checkpoint is loaded. Older checkpoints beyond `keep_last` are then deleted."""
    final = RunFolder(run_dir).checkpoint(step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.copy(RunFolder(run_dir).config, tmp / CONFIG)
            shutil.copy(RunFolder(run_dir).spec, tmp / SPEC)
            save_training_state(tmp / TRAINING_STATE, step, generators, counters)
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
