from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.data.converters.conftest import assert_fails_cleanly, convert
from visual_lps.data.robot_hdf5 import validate_hdf5

SERIALS = ("13062452", "24259877")  # wrist and external ZED cameras


def write_trajectory(path: Path, steps: int, seed: int = 0, **override) -> None:
    """A DROID trajectory.h5 as the teleoperation stack records it (keys of the DROID platform)."""
    rng = np.random.default_rng(seed)
    keys = {
        "action/cartesian_velocity": rng.uniform(-1, 1, (steps, 6)),
        "action/gripper_position": rng.uniform(0, 1, steps),
        "observation/robot_state/cartesian_position": rng.normal(size=(steps, 6)),
        "observation/robot_state/gripper_position": rng.uniform(0, 1, steps),
        "observation/timestamp/robot_state/robot_timestamp_seconds": 1700000000 + np.arange(steps) // 15,
        "observation/timestamp/robot_state/robot_timestamp_nanos": (np.arange(steps) % 15) * 66_666_666,
    }
    for serial in SERIALS:
        bgra = np.zeros((steps, 18, 24, 4), np.uint8)
        bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 200, 100, 10, 255  # blue-ish in BGRA
        bgra[:, 0, 0, 0] = np.arange(steps)  # frame index in the blue channel of one pixel
        keys[f"observation/image/{serial}_left"] = bgra
        keys[f"observation/image/{serial}_right"] = bgra
    keys |= override
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in keys.items():
            if value is not None:
                f.create_dataset(key, data=value)


@pytest.fixture
def droid_task(tmp_path: Path) -> Path:
    task = tmp_path / "put_eggplant_in_bowl"
    write_trajectory(task / "success" / "2024-05-01" / "traj_a" / "trajectory.h5", 20, seed=0)
    write_trajectory(task / "success" / "2024-05-02" / "traj_b" / "trajectory.h5", 16, seed=1)
    write_trajectory(task / "failure" / "2024-05-01" / "traj_c" / "trajectory.h5", 12, seed=2)
    return task


def test_droid_task_converts_with_renamed_resized_cameras(droid_task: Path, tmp_path: Path):
    out = tmp_path / "out" / "droid.hdf5"
    result = convert("--format", "droid", droid_task, out, "--camera", f"{SERIALS[0]}_left=wrist",
                     "--camera", f"{SERIALS[1]}_left=external", "--resize", "12x16", "--rewards", "step-penalty",
                     "--valid-fraction", "0.34")
    assert result.returncode == 0, result.stderr
    assert "frames/s" in result.stdout and "success rate 66.7%" in result.stdout
    summary = validate_hdf5(out)
    assert summary.cameras == {"wrist": (12, 16, 3), "external": (12, 16, 3)}
    assert summary.proprio == {"cartesian_position": 6, "gripper_position": 1} and summary.action_dim == 7
    assert (summary.episodes, summary.frames) == (3, 48) and summary.env_args["control_rate_hz"] == 15.0
    with h5py.File(out) as f, h5py.File(droid_task / "success/2024-05-01/traj_a/trajectory.h5") as src:
        actions = f["data/demo_0/actions"][()]
        np.testing.assert_allclose(actions[:, :6], src["action/cartesian_velocity"][()], rtol=1e-6)
        np.testing.assert_allclose(actions[:, 6], src["action/gripper_position"][()], rtol=1e-6)
        frame = f["data/demo_0/obs/wrist_image"][3]
        assert np.abs(frame[6:, :, :].astype(int) - [10, 100, 200]).max() <= 1  # BGRA -> RGB
        assert not f["data/demo_2"].attrs["success"]
        assert f["data/demo_2/rewards"][-1] == -100.0 and f["data/demo_2/terminals"][-1]


def test_droid_keeps_every_left_camera_by_default(droid_task: Path, tmp_path: Path):
    out = tmp_path / "droid.hdf5"
    assert convert("--format", "droid", droid_task, out).returncode == 0
    assert set(validate_hdf5(out).cameras) == {f"{s}_left" for s in SERIALS}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"action/cartesian_velocity": None}, "missing key 'action/cartesian_velocity'"),
        ({"observation/robot_state/gripper_position": np.zeros(7)}, "'gripper_position' has 7 steps but actions have 20"),
        ({"action/gripper_position": np.zeros(5)}, "'action/gripper_position' has 5"),
        ({"observation/timestamp/robot_state/robot_timestamp_nanos": np.zeros(20)}, "timestamps are not increasing"),
    ],
    ids=["missing-key", "mismatched-proprio", "mismatched-actions", "non-monotonic"],
)
def test_malformed_trajectories_are_named_and_leave_no_file(tmp_path: Path, override: dict, fragment: str):
    task, out_dir = tmp_path / "task", tmp_path / "out"
    out_dir.mkdir()
    write_trajectory(task / "success" / "good.h5", 20, seed=0)
    write_trajectory(task / "success" / "zbad.h5", 20, seed=1, **override)
    result = convert("--format", "droid", task, out_dir / "droid.hdf5")
    assert_fails_cleanly(result, out_dir, "zbad.h5", fragment)


def test_truncated_and_empty_trajectories(tmp_path: Path):
    task, out_dir = tmp_path / "task", tmp_path / "out"
    out_dir.mkdir()
    write_trajectory(task / "success" / "a.h5", 20)
    data = (task / "success" / "a.h5").read_bytes()
    (task / "success" / "a.h5").write_bytes(data[: len(data) // 3])
    assert_fails_cleanly(convert("--format", "droid", task, out_dir / "d.hdf5"), out_dir, "a.h5", "not a readable")
    write_trajectory(task / "success" / "a.h5", 0)
    assert_fails_cleanly(convert("--format", "droid", task, out_dir / "d.hdf5"), out_dir, "a.h5", "empty")
    assert_fails_cleanly(convert("--format", "droid", tmp_path / "nothing", out_dir / "d.hdf5"), out_dir,
                         "nothing: no such file")
