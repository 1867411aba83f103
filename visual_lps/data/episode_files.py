"""Online episodes kept in the run folder, one HDF5 file each in the project's robot format (docs/hdf5_format.md),
written atomically as the episode ends: `tools/validate_hdf5.py` checks one, `--task robot --dataset` trains on
one, and a resumed run reads them all back into its replay buffer.

An online episode has one row per step and a last row holding the final observation only (zero action, not a
terminal; `env_args['final_observation_row']`), as OGBench's files end their episodes: the chunks before it
bootstrap from it, none steps through it. Rewards and terminals are the task's labels of each row (terminal =
mask 0). A single-array observation is stored under one key (`state`, or `camera_image` for frames) and read
back as one array.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

from visual_lps.data.chunks import OfflineData
from visual_lps.data.robot_hdf5 import Episode, HDF5DatasetWriter, read_dataset
from visual_lps.observations import IMAGE_SUFFIX

STATE_KEY = "state"
"""key of a single-array observation that is not a frame"""
CAMERA = "camera"
"""camera name of a single-array observation of frames (stored as `camera_image`)"""
PATTERN = "episode_*.hdf5"


def episode_path(folder: Path, index: int) -> Path:
    return folder / f"episode_{index:06d}.hdf5"


def _is_frames(array: np.ndarray) -> bool:
    return array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3


def write_episode(path: Path, rows: OfflineData, success: bool, facts: dict,
                  step_data: dict[str, np.ndarray] | None = None, attrs: dict | None = None) -> None:
    """One online episode (its steps and its final observation row) as the file `path`, atomically; `facts` go
    into env_args (and may set `final_observation_row` False for an episode cut short without one), `step_data`
    and `attrs` beside the demo's actions and into its attributes."""
    observations = rows.observations
    if isinstance(observations, dict):
        images = {k.removesuffix(IMAGE_SUFFIX): v for k, v in observations.items() if k.endswith(IMAGE_SUFFIX)}
        proprio = {k: v for k, v in observations.items() if not k.endswith(IMAGE_SUFFIX)}
    elif _is_frames(observations):
        images, proprio = {CAMERA: observations}, {}
    else:
        images, proprio = {}, {STATE_KEY: observations.reshape(len(observations), -1)}
    episode = Episode(images, proprio, rows.actions, success, str(path), rows.rewards, terminals=rows.masks == 0,
                      step_data=step_data or {}, attrs=attrs or {})
    compression = "lzf" if images else "none"
    env_args = {"source_format": "online", "observation": "dict" if isinstance(observations, dict) else "array",
                "final_observation_row": True, **facts}
    with HDF5DatasetWriter(path, compression=compression, reward_scheme="source", valid_fraction=0.0,
                           env_args=env_args) as writer:
        writer.add(episode)


def read_episode(path: Path, observation_shape: tuple[int, ...] | None = None) -> OfflineData:
    """An episode file as rows for the replay buffer; `observation_shape` restores a single-array state's shape."""
    with h5py.File(path, "r") as file:
        demo = file["data/demo_0"]
        obs = {key: read_dataset(demo["obs"][key]) for key in demo["obs"]}
        actions = read_dataset(demo["actions"]).astype(np.float32)
        rewards = read_dataset(demo["rewards"]).astype(np.float32)
        terminals = read_dataset(demo["terminals"]).astype(bool)
    if list(obs) == [STATE_KEY] and observation_shape is not None:
        observations = obs[STATE_KEY].reshape(len(actions), *observation_shape)
    elif list(obs) in ([STATE_KEY], [CAMERA + IMAGE_SUFFIX]):
        observations = next(iter(obs.values()))
    else:
        observations = obs
    ends = np.zeros(len(actions), bool)
    ends[-1] = True
    return OfflineData(observations, actions, rewards, 1.0 - terminals.astype(np.float32), ends)


def episode_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(PATTERN)) if folder.exists() else []


def set_aside_after(folder: Path, kept: int, step: int) -> list[Path]:
    """Move the episode files from index `kept` on (recorded after the checkpoint a run resumes from, which it
    records again) into `<folder>/after_step_<step>/`, so that nothing is deleted; returns the moved files."""
    later = [path for path in episode_files(folder) if int(path.stem.split("_")[1]) >= kept]
    if later:
        aside = folder / f"after_step_{step}"
        aside.mkdir(exist_ok=True)
        for path in later:
            shutil.move(str(path), aside / path.name)
    return later
