"""Tasks hold their defaults and build their evaluators: the trainer neither knows OGBench nor robot data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from visual_lps.config import TrainConfig
from visual_lps.data.chunks import DataNeeds, OfflineData
from visual_lps.tasks import TASKS, OfflineValidation, TaskData, get_task
from visual_lps.training.flags import parse_args


@pytest.mark.parametrize("task, alpha", [("cube-single", 30.0), ("cube-double", 3.0), ("scene", 1.0),
                                         ("puzzle-3x3", 3.0), ("puzzle-4x4", 10.0), ("visual-cube", 30.0),
                                         ("visual-puzzle-4x4", 10.0)])
def test_qc_fql_alpha_is_the_published_value_of_the_task_and_a_flag_overrides_it(task, alpha, tmp_path: Path):
    _, agent = parse_args(["--task", task, "--agent", "qc-fql", "--out", str(tmp_path / "a")])
    assert agent.alpha == alpha
    _, agent = parse_args(["--task", task, "--agent", "qc-fql", "--alpha", "0.5", "--out", str(tmp_path / "b")])
    assert agent.alpha == 0.5


def test_a_task_without_a_published_alpha_asks_for_one(tmp_path: Path):
    with pytest.raises(SystemExit, match="no published alpha for task 'robot': give --alpha"):
        parse_args(["--task", "robot", "--dataset", "x.hdf5", "--agent", "qc-fql", "--out", str(tmp_path / "a")])


def test_sparse_rewards_and_pixels_are_per_task():
    assert [name for name, task in TASKS.items() if getattr(task, "sparse", False)] == ["scene", "puzzle-3x3", "visual-scene",
                                                                     "visual-puzzle-3x3"]
    assert get_task("visual-cube").eval_env_name(2) == "visual-cube-single-singletask-task2-v0"
    assert [name for name, task in TASKS.items() if not task.from_pixels] == ["cube-single", "cube-double", "scene",
                                                                              "puzzle-3x3", "puzzle-4x4"]


def test_no_evaluator_without_episodes_or_held_out_demos():
    needs, cpu = DataNeeds(horizon=2, frame_stack=1), torch.device("cpu")
    assert get_task("cube-single").make_evaluator(TrainConfig(eval_episodes=0), None, needs, cpu) is None
    data = TaskData(None, None, Path("x.hdf5"), None)
    assert get_task("robot").make_evaluator(TrainConfig(task="robot", eval_episodes=0), data, needs, cpu) is None


class MeanAction(torch.nn.Module):
    def validation_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"valid/mean_action": batch["actions"].mean()}


def test_offline_validation_averages_the_same_batches_every_time():
    rng = np.random.default_rng(0)
    demos = OfflineData(observations=rng.normal(size=(40, 3)).astype(np.float32),
                        actions=rng.normal(size=(40, 2)).astype(np.float32),
                        rewards=np.zeros(40, np.float32), masks=np.ones(40, np.float32),
                        episode_ends=np.arange(40) % 20 == 19)
    data = TaskData(demos, demos, Path("x.hdf5"), None)
    evaluator = get_task("robot").make_evaluator(TrainConfig(task="robot", eval_episodes=0, batch_size=8), data,
                                                 DataNeeds(horizon=2, frame_stack=1), torch.device("cpu"))
    assert isinstance(evaluator, OfflineValidation)
    first, second = evaluator.evaluate(MeanAction()), evaluator.evaluate(MeanAction())
    assert first == second and set(first) == {"valid/mean_action"}
    assert evaluator.describe(first).startswith("valid/mean_action ")
