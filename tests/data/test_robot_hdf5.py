import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.conftest import REPO
from visual_lps.data import robot_hdf5
from visual_lps.data.robot_data import H5Rows, load_robot_data
from visual_lps.data.robot_hdf5 import (
    DatasetFormatError,
    Episode,
    HDF5DatasetWriter,
    label_rewards,
    validate_hdf5,
)


def make_episode(n: int, success: bool = True, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        images={"front": rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8),
                "wrist": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)},
        proprio={"joints": rng.normal(size=(n, 7)).astype(np.float32)},
        actions=rng.uniform(-2, 3, (n, 4)).astype(np.float32),
        success=success,
        source=f"episode-{seed}",
    )


def write(path, episodes, **options) -> None:
    with HDF5DatasetWriter(path, **options) as writer:
        for episode in episodes:
            writer.add(episode)


def test_writer_produces_the_documented_layout(tmp_path):
    path = tmp_path / "robot.hdf5"
    episodes = [make_episode(n, success=i != 1, seed=i) for i, n in enumerate([9, 7, 11, 6, 8])]
    write(path, episodes, valid_fraction=0.2, env_args={"control_rate_hz": 15.0})
    with h5py.File(path) as f:
        demo = f["data/demo_2"]
        assert demo["actions"].dtype == np.float32 and demo["actions"].shape == (11, 4)
        assert demo["obs/front_image"].shape == (11, 12, 16, 3) and demo["obs/front_image"].dtype == np.uint8
        assert demo["obs/front_image"].chunks == (1, 12, 16, 3) and demo["obs/front_image"].compression == "gzip"
        assert demo["obs/joints"].dtype == np.float32
        assert demo["dones"][()].tolist() == [0] * 10 + [1]
        assert demo.attrs["num_samples"] == 11 and bool(demo.attrs["success"])
        assert f["data"].attrs["total"] == 41
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["cameras"] == ["front", "wrist"] and env_args["control_rate_hz"] == 15.0
        np.testing.assert_array_equal(demo["obs/front_image"][()], episodes[2].images["front"])
    summary = validate_hdf5(path)
    assert (summary.episodes, summary.frames, len(summary.valid), len(summary.train)) == (5, 41, 1, 4)
    assert summary.success_rate == pytest.approx(0.8)
    assert summary.cameras == {"front": (12, 16, 3), "wrist": (8, 8, 3)} and summary.proprio == {"joints": 7}
    assert "episodes 5" in str(summary)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_compressions_round_trip(tmp_path, compression):
    path = tmp_path / f"{compression}.hdf5"
    episode = make_episode(5)
    write(path, [episode], compression=compression, valid_fraction=0.0)
    with h5py.File(path) as f:
        assert f["data/demo_0/obs/wrist_image"].compression == (None if compression == "none" else compression)
        np.testing.assert_array_equal(f["data/demo_0/obs/wrist_image"][()], episode.images["wrist"])


def test_a_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "robot.hdf5"
    with pytest.raises(RuntimeError, match="interrupted"):
        with HDF5DatasetWriter(path) as writer:
            writer.add(make_episode(5))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    bad = make_episode(5)
    bad.images["front"] = bad.images["front"][:, :6]  # another size than the first episode's
    with pytest.raises(ValueError, match="episode-0: cameras"):
        write(path, [make_episode(5), bad])
    assert list(tmp_path.iterdir()) == []


def test_a_written_file_that_fails_validation_never_takes_the_target_path(tmp_path, monkeypatch):
    """The writer's last safeguard: a file the validator refuses is removed, and a file already at the path kept."""
    path = tmp_path / "robot.hdf5"
    path.write_text("yesterday's dataset")
    label = robot_hdf5.label_rewards
    monkeypatch.setattr(robot_hdf5, "label_rewards", lambda *args: (label(*args)[0] * np.nan, label(*args)[1]))
    with pytest.raises(DatasetFormatError, match=rf"^{path}: not a valid .*\n  data/demo_0/rewards: contains NaN"):
        write(path, [make_episode(5)])
    assert list(tmp_path.iterdir()) == [path] and path.read_text() == "yesterday's dataset"


def test_bad_writer_options_are_named_by_their_flag(tmp_path):
    for options, message in [({"failure_penalty": float("nan")}, "--failure-penalty nan: must be a finite number"),
                             ({"valid_fraction": 1.0}, r"--valid-fraction 1.0: must be in \[0, 1\)")]:
        with pytest.raises(ValueError, match=message):
            HDF5DatasetWriter(tmp_path / "robot.hdf5", **options)
    nan_rewards = make_episode(4)
    nan_rewards.rewards = np.array([0, np.nan, 0, 1], np.float32)
    with pytest.raises(ValueError, match="episode-0: the recorded rewards contain NaN or inf"):
        label_rewards(nan_rewards, "source")


def test_reward_schemes():
    success, failure = make_episode(4, True), make_episode(4, False)
    assert [r.tolist() for r in label_rewards(success, "sparse")] == [[0, 0, 0, 1], [False] * 3 + [True]]
    assert label_rewards(failure, "sparse")[1].tolist() == [False] * 4
    rewards, terminals = label_rewards(failure, "step-penalty", failure_penalty=-50)
    assert rewards.tolist() == [-1, -1, -1, -50] and terminals[-1]
    assert label_rewards(success, "step-penalty")[0].tolist() == [-1, -1, -1, 0]
    with pytest.raises(ValueError, match="records no rewards"):
        label_rewards(success, "source")


def test_validator_names_every_problem(tmp_path):
    path = tmp_path / "robot.hdf5"
    write(path, [make_episode(6, seed=i) for i in range(3)], valid_fraction=0.34)
    with h5py.File(path, "a") as f:
        del f["data/demo_1/rewards"]
        del f["data/demo_2/obs/joints"]
        f["data/demo_2/obs"].create_dataset("joints", data=np.zeros((5, 7), np.float32))
    with pytest.raises(DatasetFormatError) as error:
        validate_hdf5(path)
    message = str(error.value)
    assert str(path) in message
    assert "data/demo_1: missing ['rewards']" in message
    assert "data/demo_2/obs/joints: shape (5, 7), expected 6 rows" in message
    (tmp_path / "junk.hdf5").write_bytes(b"junk")
    with pytest.raises(DatasetFormatError, match="junk.hdf5: cannot open as HDF5"):
        validate_hdf5(tmp_path / "junk.hdf5")


def test_nan_actions_are_found(tmp_path):
    path = tmp_path / "robot.hdf5"
    write(path, [make_episode(6, seed=i) for i in range(2)])
    with h5py.File(path, "a") as f:
        f["data/demo_0/actions"][2, 1] = np.nan
    with pytest.raises(DatasetFormatError, match="data/demo_0/actions: contains NaN or inf"):
        validate_hdf5(path)


def test_loading_from_disk_equals_loading_into_ram(tmp_path):
    path = tmp_path / "robot.hdf5"
    episodes = [make_episode(n, seed=i) for i, n in enumerate([9, 7, 11])]
    write(path, episodes, valid_fraction=0.0)
    ram, disk = load_robot_data(path, cache="ram"), load_robot_data(path, cache="none")
    assert isinstance(disk.observations["front_image"], H5Rows)
    np.testing.assert_array_equal(ram.observations["front_image"],
                                  np.concatenate([e.images["front"] for e in episodes]))
    rows = np.array([[26, 3, 3], [9, 0, 15]])  # unsorted, repeated, across demos
    for key in ("front_image", "joints"):
        np.testing.assert_array_equal(disk.observations[key][rows], ram.observations[key][rows])
    assert ram.episode_ends.nonzero()[0].tolist() == [8, 15, 26] and ram.complete_last_rows


def test_validate_tool_prints_a_summary_or_names_the_problem(tmp_path):
    path = tmp_path / "robot.hdf5"
    write(path, [make_episode(6, seed=i) for i in range(3)], valid_fraction=0.34)
    good = subprocess.run([sys.executable, "tools/validate_hdf5.py", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert good.returncode == 0 and "episodes 3 (train 2, valid 1), frames 18" in good.stdout
    assert "cameras: front 12x16, wrist 8x8" in good.stdout and "success rate 100.0%" in good.stdout
    with h5py.File(path, "a") as f:
        del f["mask/valid"]
    bad = subprocess.run([sys.executable, "tools/validate_hdf5.py", str(path)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "mask/train and mask/valid are required" in bad.stderr


def test_robomimic_reads_next_observations_and_env_metadata_without_a_second_copy(tmp_path):
    """The reads of robomimic's SequenceDataset (load_next_obs=True, hdf5_filter_key) and of
    FileUtils.get_env_metadata_from_dataset, mirrored with h5py (robomimic itself pins its own torch)."""
    path = tmp_path / "robot.hdf5"
    episodes = [make_episode(n, seed=i) for i, n in enumerate([9, 1, 7])]
    write(path, episodes, valid_fraction=0.0, env_args={"env_name": "put_eggplant_in_bowl"})
    with h5py.File(path) as f:
        env_meta = json.loads(f["data"].attrs["env_args"])
        assert env_meta["env_name"] == "put_eggplant_in_bowl" and env_meta["type"] is None
        assert env_meta["env_kwargs"] == {}
        demos = [name.decode() for name in f["mask/train"][()]]
        for demo, episode in zip(sorted(demos, key=lambda d: int(d.split("_")[1])), episodes):
            group = f[f"data/{demo}"]
            n = group.attrs["num_samples"]
            for key in ("actions", "rewards", "dones"):
                assert group[key].shape[0] == n
            assert sorted(group["next_obs"]) == sorted(group["obs"])
            for key in group["obs"]:
                obs, next_obs = group[f"obs/{key}"][()], group[f"next_obs/{key}"][()]
                assert group[f"next_obs/{key}"].is_virtual and next_obs.dtype == obs.dtype
                assert np.array_equal(next_obs[:-1], obs[1:]) and np.array_equal(next_obs[-1], obs[-1])
            assert np.array_equal(group["obs/front_image"][()], episode.images["front"])


def test_next_observations_cost_no_second_copy_of_the_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)  # noise: nothing to compress away
    episode = Episode(images={"front": frames}, proprio={}, actions=np.zeros((50, 2), np.float32), success=True,
                      source="noise")
    path = tmp_path / "robot.hdf5"
    write(path, [episode], compression="none", valid_fraction=0.0)
    assert path.stat().st_size < 1.2 * frames.nbytes
    with h5py.File(path) as f:
        assert np.array_equal(f["data/demo_0/next_obs/front_image"][10], frames[11])
