"""Where a run's scalars go, through Accelerate's tracker layer (`accelerator.log`, main process only):
TensorBoard in the run folder's tb/ always (what `tools/report.py` reads), and Weights & Biases with
`--log-with wandb` (its files in the run folder's wandb/, the config as hyperparameters, one W&B run per run
folder that a `--resume` continues; `WANDB_MODE=offline` keeps it off the network)."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker

from visual_lps.config import TrainConfig
from visual_lps.files import write_text_atomic
from visual_lps.runs.folder import LOGS, RunFolder

RUN_ID_FILE = "visual_lps_run_id"
"""in the run folder's wandb/: the W&B run id, so that a resumed run logs to the same W&B run"""


def check_tracker_installed(log_with: str) -> None:
    """Before anything is loaded: a tracker whose package is missing is one error line."""
    if log_with == "wandb" and importlib.util.find_spec("wandb") is None:
        raise SystemExit("error: --log-with wandb: the wandb package is not installed (pip install wandb)")


def hyperparameters(train_cfg: TrainConfig, agent_cfg: Any) -> dict[str, Any]:
    """The run's config, flat ('train/steps', 'agent/lr', ...), as the scalar and string values trackers accept."""
    def plain(value: Any) -> Any:
        return value if isinstance(value, (bool, int, float, str)) else str(value)

    return {f"{section}/{name}": plain(value) for section, config in (("train", train_cfg), ("agent", agent_cfg))
            for name, value in vars(config).items()}


def wandb_run_id(folder: RunFolder) -> str:
    """The run folder's W&B run id, made on its first start (an --overwrite deletes it with wandb/)."""
    path = folder.wandb / RUN_ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:16]
    folder.wandb.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, run_id + "\n")
    return run_id


def start_trackers(accelerator: Accelerator, train_cfg: TrainConfig, agent_cfg: Any) -> None:
    """On the main process, once the run folder is ours: the trackers join `accelerator.trackers` (so that
    `accelerator.log` reaches them and `accelerator.end_training` closes them), started with the config."""
    if not accelerator.is_main_process:
        return
    folder = RunFolder(train_cfg.out)
    trackers: list[GeneralTracker] = [TensorBoardTracker(LOGS, str(folder.root))]
    if train_cfg.log_with == "wandb":
        trackers.append(WandBTracker(train_cfg.wandb_project, name=folder.root.resolve().name,
                                     dir=str(folder.root), id=wandb_run_id(folder), resume="allow"))
    config = hyperparameters(train_cfg, agent_cfg)
    for tracker in trackers:
        tracker.start()
        if tracker.name != "tensorboard":  # TensorBoard's copy would be a stray folder in tb/; config.yaml has it
            tracker.store_init_configuration(config)
        accelerator.trackers.append(tracker)


def log_video(accelerator: Accelerator, path: Path, step: int) -> None:
    """An evaluation video (an .mp4 already written) to W&B, where it logs; TensorBoard keeps scalars only."""
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            import wandb

            tracker.tracker.log({"eval/video": wandb.Video(str(path), format="mp4")}, step=step)


def finish_trackers(accelerator: Accelerator) -> None:
    """Close every tracker, also when the run ends in an error (their files complete, W&B's process gone)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def flush(accelerator: Accelerator) -> None:
    """Make what was logged readable now (TensorBoard otherwise writes every two minutes)."""
    if accelerator.is_main_process:
        accelerator.get_tracker("tensorboard", unwrap=True).flush()
