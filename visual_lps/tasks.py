"""The tasks `train.py --task` accepts, and what each one means: dataset, evaluation env, config file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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
    def dataset_name(self) -> str:
        return f"{self.env_base}-play-v0"

    def eval_env_name(self, task_id: int) -> str:
        return f"{self.env_base}-singletask-task{task_id}-v0"

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / f"{self.config_family}.yaml"


@dataclass(frozen=True)
class RobotTask:
    """Training on a robot HDF5 dataset (`--dataset FILE.hdf5`, see docs/hdf5_format.md). There is no
    simulator: evaluation reports offline metrics on the file's mask/valid demos instead."""

    name: str = "robot"
    config_family: str = "robot"

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / f"{self.config_family}.yaml"


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
