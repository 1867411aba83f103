"""Robot episodes kept while fine-tuning (visual_lps.data.robot_episodes): one file per episode and an index that
is a valid dataset of them, labels turned into rewards by the converter's schemes, nothing trained on that is
discarded or incomplete, numbering that survives a restart."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from visual_lps.data.episode_files import read_episode
from visual_lps.data.robot_data import load_robot_data
from visual_lps.data.robot_episodes import HUMAN, INCOMPLETE, RobotEpisode, RobotEpisodeStore
from visual_lps.data.robot_hdf5 import validate_hdf5


def robot_episode(steps: int, label: str, seed: int = 0, human_from: int | None = None,
                  rewards: bool = False) -> RobotEpisode:
    rng = np.random.default_rng(seed)
    episode = RobotEpisode(label=label)
    for t in range(steps):
        episode.observations.append({"front_image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                                     "joints": rng.normal(size=3).astype(np.float32)})
        episode.actions.append(rng.uniform(-1, 1, 2).astype(np.float32))
        human = human_from is not None and t >= human_from
        episode.interventions.append(human)
        episode.versions.append(HUMAN if human else 10 + t)
        episode.robot_rewards.append(float(t) if rewards else None)
    if label != INCOMPLETE:
        episode.final_observation = {"front_image": np.full((8, 8, 3), 7, np.uint8), "joints": np.ones(3, np.float32)}
    return episode


def test_each_episode_is_a_file_and_the_index_a_valid_dataset_of_the_trained_on_ones(tmp_path: Path):
    store = RobotEpisodeStore(tmp_path, "sparse", facts={"task": "robot"})
    episodes = [robot_episode(6, "success", 0, human_from=4), robot_episode(5, "failure", 1),
                robot_episode(4, "discard", 2), robot_episode(3, INCOMPLETE, 3)]
    stored = [store.write(e) for e in episodes]
    assert [s.trained_on for s in stored] == [True, True, False, False]
    assert [p.name for p in sorted((tmp_path / "robot").iterdir())] == [f"episode_{i:06d}.hdf5" for i in range(4)]
    summary = validate_hdf5(tmp_path / "robot_episodes.hdf5")
    assert summary.train == ["demo_0", "demo_1"] and summary.valid == []
    assert summary.frames == 7 + 6 + 5 + 3  # the finished ones with their final observation row
    with h5py.File(tmp_path / "robot_episodes.hdf5", "r") as file:
        masks = {name: [n.decode() for n in file["mask"][name][:]] for name in file["mask"]}
        assert masks["online"] == [f"demo_{i}" for i in range(4)]
        assert masks["discarded"] == ["demo_2"] and masks["incomplete"] == ["demo_3"]
        first = file["data/demo_0"]
        assert first.attrs["label"] == "success" and first.attrs["complete"]
        assert np.array_equal(first["actions"][:6], np.stack(episodes[0].actions))
        assert np.array_equal(first["actions"][6], np.zeros(2))
        assert np.array_equal(first["obs/front_image"][6], np.full((8, 8, 3), 7))
        assert first["interventions"][:].tolist() == [False] * 4 + [True] * 2 + [False]
        assert first["policy_versions"][:].tolist() == [10, 11, 12, 13, HUMAN, HUMAN, HUMAN]
        # sparse: 1 and a terminal on the last step of a success; the final row only bootstraps
        assert first["rewards"][:].tolist() == [0, 0, 0, 0, 0, 1, 0]
        assert first["terminals"][:].tolist() == [False] * 5 + [True, False]
        assert file["data/demo_1"]["rewards"][:].sum() == 0 and not file["data/demo_1"]["terminals"][:].any()
        incomplete = file["data/demo_3"]
        assert incomplete.attrs["label"] == INCOMPLETE and not incomplete.attrs["complete"]
        assert len(incomplete["actions"]) == 3  # the steps that arrived, no final row
    data = load_robot_data(tmp_path / "robot_episodes.hdf5")  # trainable offline later, as any robot file
    assert len(data.actions) == 7 + 6
    back = read_episode(stored[0].path)
    assert np.array_equal(back.observations["joints"][:6], np.stack([o["joints"] for o in episodes[0].observations]))
    assert back.masks.tolist() == [1, 1, 1, 1, 1, 0, 1]


def test_numbering_continues_after_a_restart_and_labels_follow_the_scheme(tmp_path: Path):
    RobotEpisodeStore(tmp_path, "step-penalty", failure_penalty=-50.0).write(robot_episode(3, "failure"))
    again = RobotEpisodeStore(tmp_path, "source")
    assert len(again) == 1 and again.stored[0].label == "failure" and again.stored[0].steps == 3
    stored = again.write(robot_episode(4, "success", rewards=True))
    assert stored.index == 1
    with h5py.File(tmp_path / "robot_episodes.hdf5", "r") as file:
        assert file["data/demo_0/rewards"][:].tolist() == [-1, -1, -50, 0]
        assert file["data/demo_0/terminals"][:].tolist() == [False, False, True, False]
        assert file["data/demo_1/rewards"][:].tolist() == [0, 1, 2, 3, 0]  # the robot's own
        assert file["data/demo_1/robot_rewards"][:4].tolist() == [0, 1, 2, 3]
        assert file["data/demo_1/terminals"][:].tolist() == [False, False, False, True, False]


def test_a_bad_scheme_and_a_gap_in_the_files_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="--rewards 'dense'"):
        RobotEpisodeStore(tmp_path, "dense")
    store = RobotEpisodeStore(tmp_path)
    store.write(robot_episode(2, "failure"))
    (tmp_path / "robot" / "episode_000000.hdf5").rename(tmp_path / "robot" / "episode_000004.hdf5")
    with pytest.raises(ValueError, match="not numbered 0..0"):
        RobotEpisodeStore(tmp_path)
