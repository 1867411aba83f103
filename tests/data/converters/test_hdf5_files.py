from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.data.test_episode_files import online_episode
from visual_lps.cli.convert_teleop import main as convert_main
from visual_lps.data.chunks import chunk_starts
from visual_lps.data.episode_files import episode_path, write_episode
from visual_lps.data.robot_data import load_robot_data


def test_a_runs_online_episodes_merge_into_one_training_file_keeping_their_labels(tmp_path: Path):
    online = tmp_path / "run" / "online"
    episodes = [online_episode(n, (28,), success=i == 1, seed=i) for i, n in enumerate([7, 9, 6])]
    for i, rows in enumerate(episodes):
        write_episode(episode_path(online, i), rows, i == 1, {})
    out = tmp_path / "online.hdf5"
    convert_main(["--format", "hdf5", str(online), str(out), "--rewards", "source", "--valid-fraction", "0"])
    data = load_robot_data(out, "train")
    assert np.array_equal(data.observations["state"], np.concatenate([e.observations for e in episodes]))
    assert np.array_equal(data.rewards, np.concatenate([e.rewards for e in episodes]))
    assert np.array_equal(data.masks, np.concatenate([e.masks for e in episodes]))
    with h5py.File(out) as file:
        assert [bool(file[f"data/demo_{i}"].attrs["success"]) for i in range(3)] == [False, True, False]
    terminal_last_rows = (data.masks == 0) & data.episode_ends
    ends = np.concatenate([e.episode_ends for e in episodes])
    assert np.array_equal(chunk_starts(data.episode_ends, 2, terminal_last_rows), chunk_starts(ends, 2))


def test_a_file_not_in_the_format_is_named(tmp_path: Path, capsys):
    (tmp_path / "in").mkdir()
    with h5py.File(tmp_path / "in" / "stray.hdf5", "w") as file:
        file.create_dataset("x", data=np.zeros(3))
    with pytest.raises(SystemExit) as raised:
        convert_main(["--format", "hdf5", str(tmp_path / "in"), str(tmp_path / "out.hdf5")])
    assert "stray.hdf5: no 'data' group" in str(raised.value) + capsys.readouterr().err
    assert not (tmp_path / "out.hdf5").exists()
