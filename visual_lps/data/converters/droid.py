"""DROID teleoperation recordings: `TASK/success/**/*.h5` and `TASK/failure/**/*.h5`, one HDF5 file per
trajectory as written by the DROID stack (Franka, wrist and external ZED cameras, 15 Hz).

Per file: actions = `action/cartesian_velocity` (6) + `action/gripper_position` (1); proprioception
`cartesian_position` (6) and `gripper_position` (1) from `observation/robot_state`; cameras
`observation/image/<serial>_left` (BGRA uint8, converted to RGB; named `<serial>_left`, rename with
--camera). Success or failure comes from the folder. When `observation/timestamp/robot_state/
robot_timestamp_seconds` and `_nanos` are present, they must increase.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from visual_lps.data.converters.common import (ConversionError, ConvertOptions, Source, bgr_to_rgb,
                                               check_increasing, outcome_folders, select_cameras)
from visual_lps.data.robot_hdf5 import Episode

CONTROL_RATE_HZ = 15.0
ACTION_KEYS = ("action/cartesian_velocity", "action/gripper_position")
PROPRIO_KEYS = {"cartesian_position": "observation/robot_state/cartesian_position",
                "gripper_position": "observation/robot_state/gripper_position"}
IMAGE_GROUP = "observation/image"
TIMESTAMP_GROUP = "observation/timestamp/robot_state"
TIMESTAMP_KEYS = (f"{TIMESTAMP_GROUP}/robot_timestamp_seconds", f"{TIMESTAMP_GROUP}/robot_timestamp_nanos")


class DroidSource(Source):
    """A DROID task folder; opening it lists its trajectory files and their outcomes."""

    def __init__(self, src: Path, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.trajectories = outcome_folders(self.src, "**/*.h5")  # (file, success), successes first

    def __len__(self) -> int:
        return len(self.trajectories)

    def facts(self) -> dict:
        return {"control_rate_hz": CONTROL_RATE_HZ, "robot": "Franka Panda (DROID)",
                "action_space": "cartesian velocity (6) + gripper position (1)"}

    def episodes(self) -> Iterator[Episode]:
        for path, success in self.trajectories:
            yield _read_trajectory(path, success, self.options)


def _array(file: h5py.File, key: str, path: Path) -> np.ndarray:
    if key not in file:
        raise ConversionError(f"{path}: missing key '{key}'")
    try:
        return np.asarray(file[key][()])
    except (OSError, RuntimeError) as e:
        raise ConversionError(f"{path}: cannot read '{key}' ({e})") from None


def _read_trajectory(path: Path, success: bool, options: ConvertOptions) -> Episode:
    try:
        file = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"{path}: not a readable HDF5 file ({e})") from None
    with file:
        velocity, gripper = (_array(file, key, path) for key in ACTION_KEYS)
        if len(velocity) == 0:
            raise ConversionError(f"{path}: empty trajectory (no steps)")
        if len(velocity) != len(gripper):
            raise ConversionError(f"{path}: '{ACTION_KEYS[0]}' has {len(velocity)} steps but "
                                  f"'{ACTION_KEYS[1]}' has {len(gripper)}")
        actions = np.concatenate([velocity.reshape(len(velocity), -1), gripper.reshape(len(gripper), -1)], axis=1)
        proprio = {name: _array(file, key, path).astype(np.float32) for name, key in PROPRIO_KEYS.items()}
        proprio = {name: values.reshape(len(values), -1) for name, values in proprio.items()}
        if IMAGE_GROUP not in file:
            raise ConversionError(f"{path}: missing group '{IMAGE_GROUP}'")
        images = {}
        for name in file[IMAGE_GROUP]:
            if not name.endswith("_left"):
                continue
            frames = _array(file, f"{IMAGE_GROUP}/{name}", path)
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (3, 4):
                raise ConversionError(f"{path}: '{IMAGE_GROUP}/{name}' must be (T, H, W, 4) BGRA uint8, "
                                      f"got {frames.shape} {frames.dtype}")
            images[name] = bgr_to_rgb(frames)
        if all(key in file for key in TIMESTAMP_KEYS):
            seconds, nanos = (_array(file, key, path).astype(np.float64) for key in TIMESTAMP_KEYS)
            check_increasing(seconds + 1e-9 * nanos, f"{path}: '{TIMESTAMP_GROUP}'")
    images = select_cameras(images, options, str(path))
    try:
        return Episode(images=images, proprio=proprio, actions=actions.astype(np.float32), success=success,
                       source=str(path))
    except ValueError as e:
        raise ConversionError(str(e)) from None
