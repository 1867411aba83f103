from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.data.converters.conftest import assert_fails_cleanly, convert
from visual_lps.data.robot_hdf5 import validate_hdf5

SERIALS = ("13062452", "24259877")  # wrist and external ZED cameras
CAMERAS = tuple(f"{serial}_{side}" for serial in SERIALS for side in ("left", "right"))
TRAJECTORIES = {"success/2024-05-01/traj_a/trajectory.h5": 20, "success/2024-05-02/traj_b/trajectory.h5": 16,
                "failure/2024-05-01/traj_c/trajectory.h5": 12}
"""the droid_task fixture: trajectory -> steps, in the order the converter writes them (successes first, by name)"""


def frame_bgra(camera: str, steps: int) -> np.ndarray:
    """(steps, 18, 24, 4) BGRA frames, each of one colour: red = frame index, green = camera, blue = 255. A swapped
    camera, a reordered frame or a missing BGR->RGB conversion changes the colour; a resize keeps it."""
    assert steps < 255, "the frame index must fit the red channel and differ from blue"
    bgra = np.empty((steps, 18, 24, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 3] = 255, 30 + 60 * CAMERAS.index(camera), 255
    bgra[..., 2] = np.arange(steps)[:, None, None]
    return bgra


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
    keys |= {f"observation/image/{camera}": frame_bgra(camera, steps) for camera in CAMERAS}
    keys |= override
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in keys.items():
            if value is not None:
                f.create_dataset(key, data=value)


def assert_same_frames(converted: np.ndarray, bgra: np.ndarray) -> None:
    """Converted RGB frames against the source's BGRA ones, frame by frame; resized frames are compared by colour,
    which suffices because every source frame is of one colour (and a resize keeps it)."""
    rgb = bgra[..., [2, 1, 0]]
    if converted.shape[1:3] != rgb.shape[1:3]:
        rgb = np.broadcast_to(rgb[:, :1, :1], (len(rgb), *converted.shape[1:]))
    np.testing.assert_array_equal(converted, rgb)


def assert_converted(demo: h5py.Group, trajectory: Path, cameras: dict[str, str]) -> None:
    """One output demo against its source trajectory, row by row: actions, proprioception and the frames of each
    camera (source name -> output name)."""
    with h5py.File(trajectory) as src:
        actions = demo["actions"][()]
        np.testing.assert_array_equal(actions[:, :6], src["action/cartesian_velocity"][()].astype(np.float32))
        np.testing.assert_array_equal(actions[:, 6], src["action/gripper_position"][()].astype(np.float32))
        for key in ("cartesian_position", "gripper_position"):
            expected = src[f"observation/robot_state/{key}"][()].astype(np.float32).reshape(len(actions), -1)
            np.testing.assert_array_equal(demo[f"obs/{key}"][()], expected, err_msg=key)
        for source, name in cameras.items():
            assert_same_frames(demo[f"obs/{name}_image"][()], src[f"observation/image/{source}"][()])


@pytest.fixture
def droid_task(tmp_path: Path) -> Path:
    task = tmp_path / "put_eggplant_in_bowl"
    for seed, (trajectory, steps) in enumerate(TRAJECTORIES.items()):
        write_trajectory(task / trajectory, steps, seed=seed)
    return task


def test_droid_task_converts_with_renamed_resized_cameras(droid_task: Path, tmp_path: Path):
    out = tmp_path / "out" / "droid.hdf5"
    cameras = {f"{SERIALS[0]}_left": "wrist", f"{SERIALS[1]}_left": "external"}
    result = convert("--format", "droid", droid_task, out, *(f"--camera={s}={n}" for s, n in cameras.items()),
                     "--resize", "12x16", "--rewards", "step-penalty", "--valid-fraction", "0.34")
    assert result.returncode == 0, result.stderr
    assert "frames/s" in result.stdout and "success rate 66.7%" in result.stdout
    summary = validate_hdf5(out)
    assert summary.cameras == {"wrist": (12, 16, 3), "external": (12, 16, 3)}
    assert summary.proprio == {"cartesian_position": 6, "gripper_position": 1} and summary.action_dim == 7
    assert (summary.episodes, summary.frames) == (3, 48) and summary.env_args["control_rate_hz"] == 15.0
    with h5py.File(out) as f:
        for i, (trajectory, steps) in enumerate(TRAJECTORIES.items()):
            demo, success = f[f"data/demo_{i}"], trajectory.startswith("success/")
            assert_converted(demo, droid_task / trajectory, cameras)
            assert demo.attrs["success"] == success
            rewards = [-1.0] * (steps - 1) + [0.0 if success else -100.0]
            assert demo["rewards"][()].tolist() == rewards and demo["terminals"][-1]


def test_droid_keeps_every_left_camera_by_default(droid_task: Path, tmp_path: Path):
    out = tmp_path / "droid.hdf5"
    assert convert("--format", "droid", droid_task, out).returncode == 0
    left = {camera: camera for camera in CAMERAS if camera.endswith("_left")}
    assert validate_hdf5(out).cameras == {camera: (18, 24, 3) for camera in left}
    with h5py.File(out) as f:
        for i, trajectory in enumerate(TRAJECTORIES):
            assert_converted(f[f"data/demo_{i}"], droid_task / trajectory, left)  # at source size: every pixel


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
