"""Robot HDF5 datasets: conversion speed, file size per compression, and loader throughput.

Frames are real renders: the visual-cube-single camera (64x64, upscaled to the --size of a robot camera),
from a file made by `bench/visual_loading_memory.py` or rendered here (one 200-step episode).

- conversion frames/s of the `droid` and `folder` converters (tools/convert_teleop.py, gzip) on a source of
  --frames frames with two cameras;
- file size per 1,000 frames (two cameras) for gzip, lzf and no compression;
- loader throughput: frames/s of ChunkSampler.sample(256) (s_t and s_{t+h}, two cameras) reading from the
  HDF5 file (--data-cache none), from the RAM cache (and how fast the cache fills), and from in-RAM arrays.

    python bench/hdf5_data.py [--frames 2000] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tools/

import h5py
import numpy as np
from PIL import Image

import visual_lps  # noqa: F401, E402
from tools.convert_teleop import main as convert_main
from visual_lps.data.chunks import ChunkSampler, DataNeeds, OfflineData
from visual_lps.data.converters.common import resize_frames
from visual_lps.data.ogbench_generation import generate
from visual_lps.data.robot_data import load_robot_data

EPISODE = 100


def rendered_frames(count: int, size: int) -> np.ndarray:
    tiled = sorted(Path("data/bench").glob("visual-cube-single-tiled-*.npz"))
    if tiled:
        with np.load(tiled[0]) as file:
            frames = file["observations"][:count]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path, _ = generate("visual-cube-single-play-v0", tmp, episodes=1, max_episode_steps=200, workers=1)
            with np.load(path) as file:
                frames = file["observations"]
    frames = np.concatenate([frames] * (-(-count // len(frames))))[:count]
    return resize_frames(frames, (size, size))


def write_droid(root: Path, frames: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for e, start in enumerate(range(0, len(frames), EPISODE)):
        chunk = frames[start:start + EPISODE]
        n = len(chunk)
        bgra = np.concatenate([chunk[..., ::-1], np.full((*chunk.shape[:3], 1), 255, np.uint8)], axis=-1)
        path = root / "success" / f"traj_{e:04d}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f["action/cartesian_velocity"] = rng.uniform(-1, 1, (n, 6))
            f["action/gripper_position"] = rng.uniform(0, 1, n)
            f["observation/robot_state/cartesian_position"] = rng.normal(size=(n, 6))
            f["observation/robot_state/gripper_position"] = rng.uniform(0, 1, n)
            f["observation/image/111_left"] = bgra
            f["observation/image/222_left"] = bgra[:, ::-1]


def write_folders(root: Path, frames: np.ndarray) -> None:
    for e, start in enumerate(range(0, len(frames), EPISODE)):
        chunk = frames[start:start + EPISODE]
        folder = root / f"episode_{e:04d}"
        for camera, view in (("front", chunk), ("wrist", chunk[:, ::-1])):
            (folder / camera).mkdir(parents=True)
            for t, frame in enumerate(view):
                Image.fromarray(frame).save(folder / camera / f"{t:06d}.png")
        np.save(folder / "actions.npy", np.zeros((len(chunk), 7), np.float32))


def timed_convert(fmt: str, src: Path, out: Path, *extra: str) -> float:
    start = time.perf_counter()
    convert_main(["--format", fmt, str(src), str(out), "--overwrite", *extra])
    return time.perf_counter() - start


def sampling_rate(data: OfflineData, seconds: float = 10.0) -> float:
    """Observation frames delivered per second (two views per chunk, each camera counted)."""
    sampler = ChunkSampler(data, DataNeeds(5), device="cpu", seed=0)
    cameras = sum(key.endswith("_image") for key in data.observations)
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        sampler.sample(256)
        batches += 1
    return batches * 256 * 2 * cameras / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    frames = rendered_frames(args.frames, args.size)
    print(f"{args.frames} frames of {args.size}x{args.size}, two cameras")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_droid(tmp / "droid", frames)
        write_folders(tmp / "folder", frames)
        for fmt in ("droid", "folder"):
            seconds = timed_convert(fmt, tmp / fmt, tmp / f"{fmt}.hdf5")
            print(f"RESULT convert {fmt}: {args.frames / seconds:.0f} frames/s ({seconds:.1f} s)")
        for compression in ("gzip", "lzf", "none"):
            out = tmp / f"droid-{compression}.hdf5"
            timed_convert("droid", tmp / "droid", out, "--compression", compression)
            size = out.stat().st_size / args.frames * 1000 / 2**20
            print(f"RESULT size {compression}: {size:.1f} MiB per 1,000 frames (two cameras)")
        path = tmp / "droid-gzip.hdf5"
        on_disk = load_robot_data(path, cache="none")
        start = time.perf_counter()
        cached = load_robot_data(path, cache="ram")
        fill = time.perf_counter() - start
        in_ram = OfflineData({k: np.array(v) for k, v in cached.observations.items()}, cached.actions,
                             cached.rewards, cached.masks, cached.episode_ends, complete_last_rows=True)
        print(f"RESULT loader hdf5 (no cache): {sampling_rate(on_disk):.0f} frames/s")
        print(f"RESULT loader RAM cache: {sampling_rate(cached):.0f} frames/s (cache filled at "
              f"{2 * len(cached.actions) / fill:.0f} frames/s)")
        print(f"RESULT loader in-RAM arrays: {sampling_rate(in_ram):.0f} frames/s")


if __name__ == "__main__":
    main()
