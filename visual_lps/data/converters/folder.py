"""Plain folders, one per episode (sorted by name):

    EPISODE/
      <camera>/000000.png ...        frames per camera (PNG or JPEG), in name order
      actions.npy | .npz | .csv | .json     (N, A)            required
      state.npy | .npz | .csv | .json       (N, D)            optional; an .npz gives one key per array
      rewards.npy | .csv | .json            (N,)              optional (for --rewards source)
      timestamps.npy | .csv | .json         (N,)              optional; must increase
      meta.json                             {"success": true} optional (default: --default-success)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from visual_lps.data.converters.common import (ConversionError, ConvertOptions, Source, check_increasing,
                                               decode_image, select_cameras)
from visual_lps.data.robot_hdf5 import Episode

ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".json")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


class FolderSource(Source):
    """A folder of episode folders; opening it lists them."""

    def __init__(self, src: Path, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.folders = sorted(p for p in self.src.iterdir() if p.is_dir())
        if not self.folders:
            raise ConversionError(f"{self.src}: no episode folders")

    def __len__(self) -> int:
        return len(self.folders)

    def facts(self) -> dict:
        return {}  # plain folders record no rate or robot

    def episodes(self) -> Iterator[Episode]:
        for folder in self.folders:
            yield _read_folder(folder, self.options)


def _find(folder: Path, stem: str) -> Path | None:
    matches = [folder / f"{stem}{suffix}" for suffix in ARRAY_SUFFIXES if (folder / f"{stem}{suffix}").exists()]
    if len(matches) > 1:
        raise ConversionError(f"{folder}: several '{stem}' files {[m.name for m in matches]}; keep one")
    return matches[0] if matches else None


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """One file -> {name: array}: .npz gives its arrays, the others one array named after the file."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as file:
                return {key: file[key] for key in file.files}
        if path.suffix == ".npy":
            array = np.load(path)
        elif path.suffix == ".csv":
            array = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            array = np.asarray(json.loads(path.read_text()), dtype=np.float64)
    except (OSError, ValueError, EOFError) as e:
        raise ConversionError(f"{path}: cannot read ({e})") from None
    return {path.stem: array}


def _read_frames(camera: Path) -> np.ndarray:
    files = sorted(p for p in camera.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    frames = []
    for file in files:
        frames.append(decode_image(file, str(file)))
        if frames[-1].shape != frames[0].shape:
            raise ConversionError(f"{file}: size {frames[-1].shape[:2]} differs from {files[0].name}'s "
                                  f"{frames[0].shape[:2]}")
    if not frames:
        raise ConversionError(f"{camera}: no PNG or JPEG frames")
    return np.stack(frames)


def _read_folder(folder: Path, options: ConvertOptions) -> Episode:
    actions_file = _find(folder, "actions")
    if actions_file is None:
        raise ConversionError(f"{folder}: missing actions ({' or '.join('actions' + s for s in ARRAY_SUFFIXES)})")
    actions = next(iter(read_arrays(actions_file).values())).astype(np.float32)
    if actions.ndim == 1:
        actions = actions[:, None]
    if len(actions) == 0:
        raise ConversionError(f"{actions_file}: empty episode (no steps)")
    state_file = _find(folder, "state")
    proprio = {} if state_file is None else {
        key: values.astype(np.float32).reshape(len(values), -1) for key, values in read_arrays(state_file).items()
    }
    rewards = None
    if (rewards_file := _find(folder, "rewards")) is not None:
        rewards = next(iter(read_arrays(rewards_file).values())).reshape(-1).astype(np.float32)
    if (times_file := _find(folder, "timestamps")) is not None:
        check_increasing(next(iter(read_arrays(times_file).values())).reshape(-1), str(times_file))
    success = options.default_success
    if (meta := folder / "meta.json").exists():
        try:
            success = bool(json.loads(meta.read_text())["success"])
        except (ValueError, KeyError) as e:
            raise ConversionError(f"{meta}: expected {{\"success\": true|false}} ({e!r})") from None
    images = {camera.name: _read_frames(camera) for camera in sorted(p for p in folder.iterdir() if p.is_dir())}
    images = select_cameras(images, options, str(folder))
    try:
        return Episode(images=images, proprio=proprio, actions=actions, success=success, source=str(folder),
                       rewards=rewards)
    except ValueError as e:
        raise ConversionError(str(e)) from None
