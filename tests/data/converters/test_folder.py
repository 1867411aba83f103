import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from tests.data.converters.conftest import assert_fails_cleanly, convert
from visual_lps.data.robot_hdf5 import validate_hdf5


def write_episode(folder: Path, steps: int, seed: int = 0, actions_format: str = "npy", success: bool | None = None,
                  cameras: tuple[str, ...] = ("front", "wrist"), frame_format: str = "png") -> dict[str, np.ndarray]:
    """An episode folder; returns what it holds: `actions`, `joints`, `gripper`, `rewards` and `<camera>_image`
    (the frames as read back from their files, JPEG loss included). Every frame is of one colour, red = frame
    index and green = camera, so that a reordered frame or a swapped camera changes it."""
    rng = np.random.default_rng(seed)
    arrays = {"actions": rng.uniform(-1, 1, (steps, 3)).astype(np.float32), "joints": rng.normal(size=(steps, 7)),
              "gripper": rng.uniform(size=steps), "rewards": rng.uniform(-1, 0, steps)}
    for c, camera in enumerate(cameras):
        (folder / camera).mkdir(parents=True)
        frames = []
        for t in range(steps):
            file = folder / camera / f"{t:06d}.{frame_format}"
            Image.fromarray(np.full((10, 14, 3), (10 * t + 5, 40 + 80 * c, 128), np.uint8)).save(file)
            with Image.open(file) as image:
                frames.append(np.asarray(image))
        arrays[f"{camera}_image"] = np.stack(frames)
    if actions_format == "npy":
        np.save(folder / "actions.npy", arrays["actions"])
    elif actions_format == "csv":
        np.savetxt(folder / "actions.csv", arrays["actions"], delimiter=",")
    elif actions_format == "json":
        (folder / "actions.json").write_text(json.dumps(arrays["actions"].tolist()))
    np.savez(folder / "state.npz", joints=arrays["joints"], gripper=arrays["gripper"])
    np.save(folder / "rewards.npy", arrays["rewards"])
    np.save(folder / "timestamps.npy", np.arange(steps) / 10)
    if success is not None:
        (folder / "meta.json").write_text(json.dumps({"success": success}))
    return arrays


def test_folders_of_frames_and_arrays_convert(tmp_path: Path):
    src, cameras = tmp_path / "episodes", ("front", "side", "wrist")
    sources = [write_episode(src / "ep0", 8, 0, "npy", success=True, cameras=cameras),
               write_episode(src / "ep1", 6, 1, "csv", success=False, cameras=cameras, frame_format="jpg"),
               write_episode(src / "ep2", 7, 2, "json", cameras=cameras)]
    out = tmp_path / "folder.hdf5"
    result = convert("--format", "folder", src, out, "--camera", "wrist=hand", "--camera", "front", "--rewards",
                     "source", "--compression", "lzf")
    assert result.returncode == 0, result.stderr
    summary = validate_hdf5(out)
    assert summary.cameras == {"hand": (10, 14, 3), "front": (10, 14, 3)}
    assert summary.proprio == {"gripper": 1, "joints": 7}
    assert summary.frames == 21 and summary.success_rate == pytest.approx(2 / 3)
    with h5py.File(out) as f:
        for i, source in enumerate(sources):  # npy, csv and json actions; png and jpg frames
            demo = f[f"data/demo_{i}"]
            np.testing.assert_array_equal(demo["actions"][()], source["actions"])
            np.testing.assert_array_equal(demo["obs/joints"][()], source["joints"].astype(np.float32))
            np.testing.assert_array_equal(demo["obs/gripper"][()], source["gripper"].astype(np.float32)[:, None])
            np.testing.assert_array_equal(demo["rewards"][()], source["rewards"].astype(np.float32))
            np.testing.assert_array_equal(demo["obs/front_image"][()], source["front_image"])
            np.testing.assert_array_equal(demo["obs/hand_image"][()], source["wrist_image"])


def bad(folder: Path, case: str) -> tuple[str, str]:
    """Break one episode folder; (file named in the error, what the error says)."""
    if case == "missing-actions":
        (folder / "actions.npy").unlink()
        return "ep1", "missing actions"
    if case == "truncated-actions":
        data = (folder / "actions.npy").read_bytes()
        (folder / "actions.npy").write_bytes(data[:60])
        return "actions.npy", "cannot read"
    if case == "mismatched-lengths":
        np.save(folder / "actions.npy", np.zeros((4, 3), np.float32))
        return "ep1", "has 6 steps but actions have 4"
    if case == "unreadable-image":
        (folder / "front" / "000002.png").write_bytes(b"not a png")
        return "000002.png", "unreadable image"
    if case == "empty-episode":
        np.save(folder / "actions.npy", np.zeros((0, 3), np.float32))
        return "actions.npy", "empty episode"
    if case == "non-monotonic":
        np.save(folder / "timestamps.npy", np.array([0, 0.1, 0.2, 0.15, 0.3, 0.4]))
        return "timestamps.npy", "not increasing (step 3)"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing-actions", "truncated-actions", "mismatched-lengths", "unreadable-image",
                                  "empty-episode", "non-monotonic"])
def test_malformed_folders_are_named_and_leave_no_file(tmp_path: Path, case: str):
    src, out_dir = tmp_path / "episodes", tmp_path / "out"
    out_dir.mkdir()
    write_episode(src / "ep0", 6, 0)
    write_episode(src / "ep1", 6, 1)
    names = bad(src / "ep1", case)
    assert_fails_cleanly(convert("--format", "folder", src, out_dir / "x.hdf5"), out_dir, *names)
