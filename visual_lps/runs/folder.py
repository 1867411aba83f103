"""A run folder's layout, named once (`RunFolder`), and its rules: where a new run goes by default, when --out
may be used (a run in it is continued with --resume or replaced with --overwrite, never silently), that it can
be written, and what --overwrite deletes. Anything else a user keeps in the folder is left alone.

    runs/cube-single-task1-lps-s0/
      config.yaml            the resolved config (train and agent sections)
      agent_spec.yaml        the observation spec, action dimension, dataset and reward variant
      run.lock               held by the one process writing the folder (visual_lps.runs.lock)
      tb/                    TensorBoard logs
      wandb/                 Weights & Biases' files, with --log-with wandb
      checkpoints/step_N/    weights, optimiser, training state, a copy of both YAML files, manifest.json
      online/                the online phase's episodes, one HDF5 file each (visual_lps.data.episode_files)
      videos/step_N.mp4      evaluation videos, with --eval-videos
      robot/, robot_episodes.hdf5   a robot fine-tuning run's episodes (visual_lps.data.robot_episodes): never
                                    deleted, not even by --overwrite
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visual_lps.config import TrainConfig

CONFIG = "config.yaml"
SPEC = "agent_spec.yaml"
LOCK = "run.lock"
LOGS = "tb"
WANDB = "wandb"
CHECKPOINTS = "checkpoints"
ONLINE = "online"
VIDEOS = "videos"
CHECKPOINT_PREFIX = "step_"
PHASE_BOUNDARY = "online/started_at_update"
"""the scalar a run logs once, when its online phase starts (its value and step: the update count then)"""


class RunFolder:
    """The paths of one run folder; the only place that spells them (the lock file: `visual_lps.runs.lock`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config, self.spec, self.logs, self.wandb, self.checkpoints, self.online, self.videos = (
            self.root / name for name in (CONFIG, SPEC, LOGS, WANDB, CHECKPOINTS, ONLINE, VIDEOS))

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step:08d}"

    @staticmethod
    def of_checkpoint(checkpoint: Path) -> RunFolder | None:
        """The run folder a checkpoint folder lies in, or None for a checkpoint kept apart from its run."""
        return RunFolder(checkpoint.parent.parent) if checkpoint.parent.name == CHECKPOINTS else None


def default_out(train: TrainConfig) -> str:
    if train.task == "robot" and train.dataset:
        return f"runs/robot-{Path(train.dataset).stem}-{train.agent}-s{train.seed}"
    return f"runs/{train.task}-task{train.task_id}-{train.agent}-s{train.seed}"


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Before anything is loaded: --out must be a folder, and one that holds a run only when that run is
    continued (--resume) or explicitly replaced (--overwrite)."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a run folder")
    if resume and overwrite:
        raise SystemExit("error: --resume continues the run in --out and --overwrite replaces it: give one")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not resume and not overwrite:
        raise SystemExit(f"error: --out {out} already holds a run ({', '.join(held)}); continue it with --resume, "
                         f"or replace it with --overwrite (deletes its checkpoints, logs, online episodes, videos and config)")


RUN_FILES = (CONFIG, SPEC, CHECKPOINTS, LOGS, WANDB, ONLINE, VIDEOS)
"""what a run folder holds (and --overwrite deletes); anything else in the folder is left alone"""


def check_writable(out: Path) -> None:
    """Write a probe file in `out` and in its checkpoints/ and tb/ where they exist: a run that cannot write its
    folder stops before it loads anything, in one line, not at its first checkpoint hours later."""
    for folder in (out, RunFolder(out).checkpoints, RunFolder(out).logs):
        if folder != out and not folder.exists():
            continue
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise SystemExit(f"error: --out {out}: cannot write to {folder} ({e.strerror or e})") from None


def clear_run_folder(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
