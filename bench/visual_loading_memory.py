"""Peak memory of loading a visual OGBench dataset for training, against the raw size of its frames.

Builds a large visual-cube-single file in the upstream schema by tiling the frames of one episode rendered by
the project's generator (memory does not depend on what the pixels show; rendering 1M frames takes a day on
2 cores), then, in a fresh process, loads it the way the trainer does (`load_ogbench_task_data`, rewards
relabelled) and builds the chunk sampler with a frame stack of 3, and draws one batch.

    python bench/visual_loading_memory.py [--frames 200000] [--out data/bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import visual_lps  # noqa: F401  (rendering setup)
from visual_lps.data.ogbench_generation import generate, save_npz_atomic

EPISODE = 200  # rows per rendered (and tiled) episode


def build_file(path: Path, frames: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source, _ = generate("visual-cube-single-play-v0", tmp, episodes=1, max_episode_steps=EPISODE, workers=1)
        with np.load(source) as file:
            episode = {key: file[key] for key in file.files}
    repeats = -(-frames // EPISODE)
    arrays = {key: np.concatenate([value] * repeats)[:frames] for key, value in episode.items()}
    arrays["terminals"][-1] = True
    save_npz_atomic(path, arrays)


def measure(path: str) -> None:
    """Run in a fresh process: RSS after imports, then peak RSS after loading, sampler and one batch."""
    import resource

    from visual_lps.data.chunks import ChunkSampler, DataNeeds
    from visual_lps.data.ogbench_data import load_ogbench_task_data
    from visual_lps.tasks import get_task

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    import gymnasium  # noqa: F401  (imported by the loader; counted in the baseline)
    import ogbench.manipspace  # noqa: F401

    before = rss_kib()
    data = load_ogbench_task_data(path, get_task("visual-cube").eval_env_name(1), sparse=False)
    sampler = ChunkSampler(data, DataNeeds(5, 3), device="cpu", seed=0)
    sampler.sample(256)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"baseline_kib": before, "peak_kib": peak, "after_kib": rss_kib(),
                      "raw_bytes": int(data.observations.nbytes), "frames": len(data.observations)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000, help="frames in the dataset")
    parser.add_argument("--out", default="data/bench", help="folder for the built dataset")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    path = Path(args.out) / f"visual-cube-single-tiled-{args.frames}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_file(path, args.frames)
    out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 1024**3
    raw = result["raw_bytes"] / gib
    growth = (result["peak_kib"] - result["baseline_kib"]) * 1024 / gib
    print(f"{result['frames']} frames of 64x64x3 uint8: raw {raw:.2f} GiB; file {path.stat().st_size / gib:.2f} GiB")
    print(f"RSS after imports {result['baseline_kib'] / 1024**2:.2f} GiB, peak {result['peak_kib'] / 1024**2:.2f} GiB "
          f"(+{growth:.2f} GiB = {growth / raw:.2f} x raw), held after loading "
          f"{(result['after_kib'] - result['baseline_kib']) * 1024 / gib:.2f} GiB")


if __name__ == "__main__":
    main()
