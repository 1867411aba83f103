from pathlib import Path

import numpy as np
import pytest

from visual_lps.data.chunks import OfflineData, chunk_starts
from visual_lps.data.episode_files import episode_path, read_episode, set_aside_after, write_episode
from visual_lps.data.robot_data import load_robot_data
from visual_lps.data.robot_hdf5 import validate_hdf5


def online_episode(steps: int, observation_shape: tuple[int, ...], success: bool, seed: int = 0) -> OfflineData:
    """`steps` steps and the final observation row, labelled as an OGBench task labels them."""
    rng = np.random.default_rng(seed)
    n = steps + 1
    if len(observation_shape) == 3:
        observations = rng.integers(0, 256, (n, *observation_shape), dtype=np.uint8)
    else:
        observations = rng.normal(size=(n, *observation_shape)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    actions[-1] = 0.0
    rewards = np.full(n, -1.0, np.float32)
    masks = np.ones(n, np.float32)
    if success:
        rewards[-1], masks[-2] = 0.0, 0.0
    return OfflineData(observations, actions, rewards, masks, np.arange(n) == n - 1)


@pytest.mark.parametrize("shape", [(28,), (16, 16, 3)])
def test_an_episode_file_validates_and_reads_back_as_the_rows_written(tmp_path: Path, shape):
    rows = online_episode(9, shape, success=True)
    path = episode_path(tmp_path, 3)
    write_episode(path, rows, True, {"task": "cube-single"})
    assert path.name == "episode_000003.hdf5" and [p.name for p in tmp_path.iterdir()] == [path.name]
    summary = validate_hdf5(path)
    assert (summary.episodes, summary.frames, summary.success_rate, summary.train) == (1, 10, 1.0, ["demo_0"])
    assert summary.env_args["final_observation_row"] and summary.env_args["task"] == "cube-single"
    back = read_episode(path, shape)
    for key in ("observations", "actions", "rewards", "masks", "episode_ends"):
        assert np.array_equal(getattr(back, key), getattr(rows, key)), key


def test_an_episode_file_trains_as_a_robot_file_with_the_chunks_the_buffer_samples(tmp_path: Path):
    """--task robot reads it: the same rows, and its final observation row starts no chunk (it is not a terminal),
    as in the replay buffer."""
    rows = online_episode(9, (28,), success=False)
    write_episode(tmp_path / "e.hdf5", rows, False, {})
    data = load_robot_data(tmp_path / "e.hdf5", "train")
    assert np.array_equal(data.observations["state"], rows.observations)
    assert np.array_equal(data.masks, rows.masks) and np.array_equal(data.rewards, rows.rewards)
    terminal_last_rows = (data.masks == 0) & data.episode_ends
    assert np.array_equal(chunk_starts(data.episode_ends, 3, terminal_last_rows), chunk_starts(rows.episode_ends, 3))


def test_episodes_recorded_after_a_checkpoint_are_set_aside_not_deleted(tmp_path: Path):
    for i in range(4):
        write_episode(episode_path(tmp_path, i), online_episode(3, (4,), False, seed=i), False, {})
    moved = set_aside_after(tmp_path, 2, step=120)
    assert [p.name for p in moved] == ["episode_000002.hdf5", "episode_000003.hdf5"]
    assert sorted(p.name for p in (tmp_path / "after_step_120").iterdir()) == [p.name for p in moved]
    assert sorted(p.name for p in tmp_path.glob("*.hdf5")) == ["episode_000000.hdf5", "episode_000001.hdf5"]
