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

from visual_lps.data.converters.common import ConversionError, ConvertOptions, select_cameras
from visual_lps.data.robot_hdf5 import Episode

ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".json")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


def episode_folders(src: Path) -> list[Path]:
    folders = sorted(p for p in src.iterdir() if p.is_dir())
    if not folders:
        raise ConversionError(f"{src}: no episode folders")
    return folders


def count_episodes(src: Path, options: ConvertOptions) -> int:
    return len(episode_folders(src))


def source_facts(src: Path, options: ConvertOptions) -> dict:
    return {}


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
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in camera.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as e:
            raise ConversionError(f"{file}: unreadable image ({e})") from None
        if frames[-1].shape != frames[0].shape:
            raise ConversionError(f"{file}: size {frames[-1].shape[:2]} differs from {files[0].name}'s "
                                  f"{frames[0].shape[:2]}")
    if not frames:
        raise ConversionError(f"{camera}: no PNG or JPEG frames")
    return np.stack(frames)


def read_folder(folder: Path, options: ConvertOptions) -> Episode:
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
        times = next(iter(read_arrays(times_file).values())).reshape(-1)
        if len(times) > 1 and not (np.diff(times) > 0).all():
            step = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
            raise ConversionError(f"{times_file}: timestamps are not increasing (step {step})")
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


def read_episodes(src: Path, options: ConvertOptions) -> Iterator[Episode]:
    for folder in episode_folders(src):
        yield read_folder(folder, options)
