from pathlib import Path

import numpy as np
import ogbench
import pytest

from visual_lps.data.ogbench_data import find_dataset, load_ogbench_task_data
from visual_lps.data.ogbench_generation import _scene_is_healthy, generate
from visual_lps.tasks import get_task

UPSTREAM_DTYPES = {"observations": np.float32, "actions": np.float32, "terminals": bool, "qpos": np.float32,
                   "qvel": np.float32}


def test_generator_writes_the_upstream_schema(tiny_cube_dir: Path):
    for name, episodes in (("cube-single-play-v0", 3), ("cube-single-play-v0-val", 1)):
        with np.load(tiny_cube_dir / f"{name}.npz") as f:
            assert set(f.files) == set(UPSTREAM_DTYPES)
            for key, dtype in UPSTREAM_DTYPES.items():
                assert f[key].dtype == dtype, key
                assert len(f[key]) == episodes * 60
            assert f["observations"].shape[1] == 28 and f["actions"].shape[1] == 5
            assert np.abs(f["actions"]).max() <= 1.0
            assert np.flatnonzero(f["terminals"]).tolist() == [60 * (i + 1) - 1 for i in range(episodes)]
    assert not list(tiny_cube_dir.glob("*.tmp"))


def test_ogbench_own_loader_reads_generated_files(tiny_cube_dir: Path):
    env, train, val = ogbench.make_env_and_datasets(
        "cube-single-play-singletask-task1-v0", dataset_path=str(tiny_cube_dir / "cube-single-play-v0.npz")
    )
    assert train["observations"].shape == (3 * 59, 28)  # ogbench drops each episode's last row
    assert set(np.unique(train["rewards"])) <= {-1.0, 0.0}
    assert len(val["observations"]) == 59
    env.close()


def test_puzzle_generation_records_button_states_and_relabels(tmp_path: Path):
    generate("puzzle-3x3-play-v0", tmp_path, episodes=1, seed=3, max_episode_steps=40, progress=False)
    with np.load(tmp_path / "puzzle-3x3-play-v0.npz") as f:
        assert f["button_states"].dtype == np.int64 and f["button_states"].shape == (40, 9)
    data = load_ogbench_task_data(tmp_path / "puzzle-3x3-play-v0.npz", get_task("puzzle-3x3").eval_env_name(1), sparse=True)
    assert set(np.unique(data.rewards)) <= {-1.0, 0.0}
    assert data.num_episodes == 1


def test_scene_generation_and_health_check(tmp_path: Path):
    generate("scene-play-v0", tmp_path, episodes=1, seed=1, max_episode_steps=40, progress=False)
    with np.load(tmp_path / "scene-play-v0.npz") as f:
        assert _scene_is_healthy(f["qpos"]) and f["button_states"].shape == (40, 2)
    qpos = np.zeros((3, 30), np.float32)
    qpos[:, 14:17] = [0.4, 0.0, 0.02]
    assert _scene_is_healthy(qpos)
    qpos[1, 15] = 0.3  # the cube went too far right
    assert not _scene_is_healthy(qpos)
    qpos[1, 15:17] = [-0.35, 0.07]  # far left, but inside the drawer
    assert _scene_is_healthy(qpos)
    qpos[1, 16] = 0.02  # far left on the table: out of view
    assert not _scene_is_healthy(qpos)


def test_generation_does_not_depend_on_worker_count(tmp_path: Path):
    generate("cube-single-play-v0", tmp_path / "one", episodes=2, seed=5, max_episode_steps=20, progress=False)
    generate("cube-single-play-v0", tmp_path / "two", episodes=2, seed=5, workers=2, max_episode_steps=20,
             progress=False)
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        with np.load(tmp_path / "one" / name) as a, np.load(tmp_path / "two" / name) as b:
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


def test_unknown_env_name_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown OGBench dataset 'cube-triple-play-v0'.*cube-single-play-v0"):
        generate("cube-triple-play-v0", tmp_path, episodes=1)


def test_missing_dataset_error_names_the_generate_command(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="tools/generate_ogbench.py --env scene-play-v0"):
        find_dataset("scene-play-v0", tmp_path, download=False)


def rewrite(src: Path, dst: Path, **changes) -> Path:
    """A copy of an ogbench .npz file with some arrays replaced."""
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    for key, change in changes.items():
        change(arrays[key])
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **arrays)
    return dst


def task_env(name: str):
    import gymnasium
    import ogbench.manipspace  # noqa: F401

    env = gymnasium.make(name)
    env.reset()
    return env.unwrapped


def test_cube_rows_at_the_goal_pay_0_and_end_the_bootstrap_the_others_pay_minus_1(tiny_cube_dir: Path, tmp_path: Path):
    goal = task_env("cube-single-singletask-task2-v0")._data.mocap_pos.copy()[0]

    def put_cube_at_goal(qpos: np.ndarray) -> None:
        qpos[[3, 7], 14:17] = goal  # rows 3 and 7: the cube (qpos 14:17) on task 2's target

    path = rewrite(tiny_cube_dir / "cube-single-play-v0.npz", tmp_path / "cube-single-play-v0.npz",
                   qpos=put_cube_at_goal)
    data = load_ogbench_task_data(path, get_task("cube-single").eval_env_name(2), sparse=False)
    assert data.observations.dtype == np.float32 and data.num_episodes == 3
    assert data.rewards[[3, 7]].tolist() == [0.0, 0.0] and data.masks[[3, 7]].tolist() == [0.0, 0.0]
    others = np.ones(len(data.rewards), bool)
    others[[3, 7]] = False
    assert (data.rewards[others] == -1).all() and (data.masks[others] == 1).all()


def test_puzzle_dense_rewards_count_wrong_buttons_and_sparse_ones_only_say_solved(tmp_path: Path):
    generate("puzzle-3x3-play-v0", tmp_path / "raw", episodes=1, seed=3, max_episode_steps=30, progress=False)
    target = task_env("puzzle-3x3-singletask-task1-v0")._target_button_states.copy()

    def near_and_at_goal(states: np.ndarray) -> None:
        states[10] = target  # solved
        states[11] = target
        states[11, 0] = 1 - target[0]  # one button wrong

    path = rewrite(tmp_path / "raw" / "puzzle-3x3-play-v0.npz", tmp_path / "puzzle-3x3-play-v0.npz",
                   button_states=near_and_at_goal)
    with np.load(path) as f:
        wrong = (f["button_states"] != target).sum(axis=1)
    dense = load_ogbench_task_data(path, get_task("puzzle-3x3").eval_env_name(1), sparse=False)
    sparse = load_ogbench_task_data(path, get_task("puzzle-3x3").eval_env_name(1), sparse=True)
    assert np.array_equal(dense.rewards, -wrong.astype(np.float32))  # one point per wrong button
    assert np.array_equal(sparse.rewards, -(wrong > 0).astype(np.float32))
    assert dense.rewards[10] == sparse.rewards[10] == 0 and dense.rewards[11] == sparse.rewards[11] == -1
    assert (dense.rewards < -1).any()  # the two variants differ where several buttons are wrong
    for data in (dense, sparse):
        assert np.array_equal(data.masks == 0, wrong == 0)  # the solved row ends the bootstrap


def test_corrupt_dataset_file_is_named(tmp_path: Path):
    bad = tmp_path / "cube-single-play-v0.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=str(bad)):
        load_ogbench_task_data(bad, get_task("cube-single").eval_env_name(1), sparse=False)
