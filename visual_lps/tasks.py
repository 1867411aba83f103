"""The tasks `train.py --task` accepts, and what each one does: hold its defaults, load its data, prepare the
agent for it, build the evaluator that turns an agent into metrics, and the environment of its online phase. A new data source is one more class
with these methods (and, where it has its own defaults, a file in configs/).

Loaders and simulators are imported inside the methods that need them: a robot run never imports MuJoCo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from visual_lps.config import load_yaml

if TYPE_CHECKING:
    import torch
    from torch import nn

    from visual_lps.config import TrainConfig
    from visual_lps.data.chunks import ChunkSampler, DataNeeds, OfflineData
    from visual_lps.data.node_share import NodeShare
    from visual_lps.envs.online import OnlineEnvironment

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


class Evaluator(Protocol):
    """What the trainer calls every --eval-every steps (main process only), the agent in eval mode. One that
    records (`--eval-videos`) also holds `video_frames` and `video_fps` of its last evaluation, which the trainer
    writes as a video."""

    def evaluate(self, agent: nn.Module) -> dict[str, float]:
        """metric name (as logged to TensorBoard) -> value"""

    def describe(self, metrics: dict[str, float]) -> str:
        """the metrics as one line of the training log"""


def task_defaults(config_path: Path | None, agent_defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The task file's sections (none without a file), the task's own agent values on top."""
    base = load_yaml(config_path) if config_path else {"train": {}, "agent": {}}
    return {"train": base["train"], "agent": base["agent"] | agent_defaults}


@dataclass(frozen=True)
class OGBenchTask:
    """A single-task OGBench manipulation problem trained from a 'play' dataset, evaluated in its simulator."""

    name: str
    """the --task name"""
    env_base: str
    """ogbench name stem, e.g. 'cube-single' (datasets '<stem>-play-v0', eval env '<stem>-singletask-task<i>-v0')"""
    sparse: bool
    """default of --sparse (the paper's '-sparse' variants)"""
    agent_defaults: dict[str, Any] = field(default_factory=dict)
    """agent fields whose default depends on the task (a flag or the task file's value overrides them)"""

    @property
    def from_pixels(self) -> bool:
        """whether the agent reads camera frames (a run then fills a GPU rather than a sliver of it)"""
        return self.env_base.startswith("visual-")

    @property
    def dataset_name(self) -> str:
        return f"{self.env_base}-play-v0"

    def eval_env_name(self, task_id: int) -> str:
        return f"{self.env_base}-singletask-task{task_id}-v0"

    @property
    def config_path(self) -> Path | None:
        """configs/visual.yaml for the visual tasks (their encoder); state tasks train on the dataclass defaults"""
        return CONFIG_DIR / "visual.yaml" if self.from_pixels else None

    def defaults(self) -> dict[str, dict[str, Any]]:
        return task_defaults(self.config_path, self.agent_defaults)

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

    def make_evaluator(
        self, train_cfg: TrainConfig, data: TaskData, needs: DataNeeds, device: torch.device
    ) -> Evaluator | None:
        """Rollouts in the single-task env of --task-id (None when --eval-episodes is 0)."""
        if train_cfg.eval_episodes == 0:
            return None
        from visual_lps.envs.ogbench_env import RolloutEvaluator

        return RolloutEvaluator(self.eval_env_name(train_cfg.task_id), train_cfg.eval_episodes, device,
                                seed=train_cfg.seed * 100_000, progress=train_cfg.progress,
                                videos=train_cfg.eval_videos, from_pixels=self.from_pixels)

    def make_online_environment(self, train_cfg: TrainConfig, data: TaskData) -> OnlineEnvironment:
        """The single-task env of --task-id, its steps labelled as the play data (rewards of --sparse or not)."""
        from visual_lps.envs.ogbench_env import OGBenchOnlineEnvironment

        return OGBenchOnlineEnvironment(self.eval_env_name(train_cfg.task_id), bool(data.sparse),
                                        train_cfg.online_episode_steps or None)


VALIDATION_BATCHES = 4
"""batches of held-out demos averaged for the offline metrics of robot runs"""


@dataclass
class OfflineValidation:
    """The agent's `validation_metrics` on held-out demos, averaged over the same batches every time."""

    sampler: ChunkSampler
    batch_size: int
    seed: int

    def evaluate(self, agent: nn.Module) -> dict[str, float]:
        self.sampler.generator.manual_seed(self.seed)
        totals: dict[str, float] = {}
        for _ in range(VALIDATION_BATCHES):
            for k, v in agent.validation_metrics(self.sampler.sample(self.batch_size)).items():
                totals[k] = totals.get(k, 0.0) + v.item() / VALIDATION_BATCHES
        return totals

    def describe(self, metrics: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())


@dataclass(frozen=True)
class RobotTask:
    """Training on a robot HDF5 dataset (`--dataset FILE.hdf5`, see docs/hdf5_format.md). There is no
    simulator: evaluation reports offline metrics on the file's mask/valid demos instead."""

    name: str = "robot"
    from_pixels: bool = True
    """robot datasets hold camera frames (a file of proprioception alone trains too, but is not sized for)"""

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / "robot.yaml"

    def defaults(self) -> dict[str, dict[str, Any]]:
        return task_defaults(self.config_path, {})

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

    def make_evaluator(
        self, train_cfg: TrainConfig, data: TaskData, needs: DataNeeds, device: torch.device
    ) -> Evaluator | None:
        """Offline metrics on the held-out demos (None when the file holds none out)."""
        from visual_lps.data.chunks import ChunkSampler

        if data.valid is None:
            return None
        try:
            sampler = ChunkSampler(data.valid, needs, device, seed=train_cfg.seed, placement=train_cfg.data_on)
        except ValueError as e:
            raise ValueError(f"{data.path}: held-out (mask/valid) demos: {e}") from None
        return OfflineValidation(sampler, train_cfg.batch_size, train_cfg.seed)

    def make_online_environment(self, train_cfg: TrainConfig, data: TaskData) -> OnlineEnvironment:
        raise ValueError(NO_SIMULATOR)


NO_SIMULATOR = ("--task robot has no simulator: --online-steps fine-tunes in an OGBench task's simulator; on a robot, "
                "online fine-tuning runs across the policy server instead (docs/online.md, 'On a robot')")


Task = OGBenchTask | RobotTask

STATE_TASKS = [  # name, sparse rewards by default, QC-FQL's distillation weight alpha (its reference's)
    ("cube-single", False, 30.0),
    ("cube-double", False, 3.0),
    ("scene", True, 1.0),
    ("puzzle-3x3", True, 3.0),
    ("puzzle-4x4", False, 10.0),
]
"""each OGBench task is trained from states and, as visual-<name>, from camera frames with the same defaults"""

TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        *(OGBenchTask(name, name, sparse, {"alpha": alpha}) for name, sparse, alpha in STATE_TASKS),
        OGBenchTask("visual-cube", "visual-cube-single", sparse=False, agent_defaults={"alpha": 30.0}),
        *(OGBenchTask(f"visual-{name}", f"visual-{name}", sparse, {"alpha": alpha}) for name, sparse, alpha in STATE_TASKS),
        RobotTask(),
    ]
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown --task {name!r}; choose one of: {', '.join(TASKS)}") from None
