"""The tasks `train.py --task` accepts, and what each one does: load its data, prepare the agent for it, build
its evaluator, name its config file. A new data source is one more class with these methods.

Loaders and simulators are imported inside the methods that need them: a robot run never imports MuJoCo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from visual_lps.config import TrainConfig
    from visual_lps.data.chunks import OfflineData
    from visual_lps.data.node_share import NodeShare

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class TaskData:
    """What a task loads for training."""

    train: OfflineData
    valid: OfflineData | None
    """held-out demos for offline metrics (robot data), or None"""
    path: Path
    """the dataset file"""
    sparse: bool | None
    """the reward variant, where the task has one"""


@dataclass(frozen=True)
class OGBenchTask:
    """A single-task OGBench manipulation problem trained from a 'play' dataset."""

    name: str
    """the --task name"""
    env_base: str
    """ogbench name stem, e.g. 'cube-single' (datasets '<stem>-play-v0', eval env '<stem>-singletask-task<i>-v0')"""
    config_family: str
    """configs/<family>.yaml holds the defaults of this family"""
    sparse: bool
    """default of --sparse (the paper's '-sparse' variants)"""

    @property
    def from_pixels(self) -> bool:
        """whether the agent reads camera frames (a run then fills a GPU rather than a sliver of it)"""
        return self.config_family == "visual"

    @property
    def dataset_name(self) -> str:
        return f"{self.env_base}-play-v0"

    def eval_env_name(self, task_id: int) -> str:
        return f"{self.env_base}-singletask-task{task_id}-v0"

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / f"{self.config_family}.yaml"

    has_simulator = True

    def describe(self, train_cfg: TrainConfig) -> str:
        return f"{self.name} task{train_cfg.task_id}"

    def load(self, train_cfg: TrainConfig, announce: bool, share: NodeShare | None = None) -> TaskData:
        """The play dataset (found, downloaded, or named with the command that generates it), relabelled with the
        rewards of --task-id."""
        from visual_lps.data.ogbench_data import find_dataset, load_ogbench_task_data

        sparse = self.sparse if train_cfg.sparse is None else train_cfg.sparse
        if train_cfg.dataset:
            path = Path(train_cfg.dataset)
            if not path.exists():
                raise FileNotFoundError(f"--dataset {path}: no such file")
        else:
            path = find_dataset(self.dataset_name, train_cfg.dataset_dir)
        return TaskData(load_ogbench_task_data(path, self.eval_env_name(train_cfg.task_id), sparse, share), None, path, sparse)

    def prepare_agent(self, agent: nn.Module, data: TaskData) -> None:
        """OGBench actions are already in [-1, 1] and its states need no statistics."""

    def make_evaluator(self, train_cfg: TrainConfig) -> Any:
        """The single-task evaluation env of --task-id (None when --eval-episodes is 0)."""
        from visual_lps.envs.ogbench_env import make_eval_env

        return make_eval_env(self.eval_env_name(train_cfg.task_id)) if train_cfg.eval_episodes > 0 else None


@dataclass(frozen=True)
class RobotTask:
    """Training on a robot HDF5 dataset (`--dataset FILE.hdf5`, see docs/hdf5_format.md). There is no
    simulator: evaluation reports offline metrics on the file's mask/valid demos instead."""

    name: str = "robot"
    config_family: str = "robot"
    from_pixels: bool = True
    """robot datasets hold camera frames (a file of proprioception alone trains too, but is not sized for)"""

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / f"{self.config_family}.yaml"

    has_simulator = False

    def describe(self, train_cfg: TrainConfig) -> str:
        return self.name

    def load(self, train_cfg: TrainConfig, announce: bool, share: NodeShare | None = None) -> TaskData:
        """The file's mask/train and mask/valid demos, after checking the file against the format."""
        from tqdm import tqdm

        from visual_lps.data.robot_data import load_robot_data
        from visual_lps.data.robot_hdf5 import validate_hdf5

        if not train_cfg.dataset:
            raise ValueError("--task robot needs --dataset FILE.hdf5 (tools/convert_teleop.py makes one from "
                             "teleoperation logs)")
        if train_cfg.eval_episodes > 0:
            raise ValueError("--task robot has no simulator to evaluate in: set --eval-episodes 0 (offline "
                             "metrics on the dataset's mask/valid demos are reported instead)")
        summary = validate_hdf5(train_cfg.dataset)
        if announce:
            tqdm.write(str(summary))
            if not summary.valid:
                tqdm.write(f"warning: {summary.path}: mask/valid lists no demos, so this run reports no offline "
                           f"metrics (convert with --valid-fraction above 0 to hold some demos out)")
        data = load_robot_data(summary.path, "train", train_cfg.data_cache, share)
        valid = load_robot_data(summary.path, "valid", train_cfg.data_cache, share) if summary.valid else None
        return TaskData(data, valid, summary.path, None)

    def prepare_agent(self, agent: nn.Module, data: TaskData) -> None:
        """The agent works in [-1, 1] and on standardised proprioception: the training demos' action bounds and
        state statistics become buffers of the agent, so they travel with every checkpoint (act() undoes the
        action scaling); the stored actions of both splits are scaled here."""
        import torch

        from visual_lps.data.robot_data import state_statistics

        agent.set_action_bounds(data.train.actions.min(axis=0), data.train.actions.max(axis=0))
        agent.set_state_statistics(*state_statistics(data.train))
        for split in filter(None, (data.train, data.valid)):
            split.actions = agent.normalize_actions(torch.from_numpy(split.actions)).numpy()

    def make_evaluator(self, train_cfg: TrainConfig) -> None:
        """No simulator: the trainer reports offline metrics on the held-out demos instead."""
        return None


Task = OGBenchTask | RobotTask

TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        OGBenchTask("cube-single", "cube-single", "cube", sparse=False),
        OGBenchTask("cube-double", "cube-double", "cube", sparse=False),
        OGBenchTask("scene", "scene", "scene", sparse=True),
        OGBenchTask("puzzle-3x3", "puzzle-3x3", "puzzle", sparse=True),
        OGBenchTask("puzzle-4x4", "puzzle-4x4", "puzzle", sparse=False),
        OGBenchTask("visual-cube", "visual-cube-single", "visual", sparse=False),
        OGBenchTask("visual-cube-single", "visual-cube-single", "visual", sparse=False),
        OGBenchTask("visual-cube-double", "visual-cube-double", "visual", sparse=False),
        OGBenchTask("visual-scene", "visual-scene", "visual", sparse=True),
        OGBenchTask("visual-puzzle-3x3", "visual-puzzle-3x3", "visual", sparse=True),
        OGBenchTask("visual-puzzle-4x4", "visual-puzzle-4x4", "visual", sparse=False),
        RobotTask(),
    ]
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown --task {name!r}; choose one of: {', '.join(TASKS)}") from None
