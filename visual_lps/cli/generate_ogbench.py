"""Generate an OGBench 'play' dataset locally (no internet needed), in the schema ogbench loads.

    python tools/generate_ogbench.py --env cube-single-play-v0 --episodes 1000 --seed 0 --out data/ogbench
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from visual_lps.data.ogbench_generation import DATASET_NAMES, generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, help=f"dataset name, one of: {', '.join(DATASET_NAMES)}")
    parser.add_argument("--episodes", type=int, default=1000, help="training episodes (upstream: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole dataset")
    parser.add_argument("--out", default="data/ogbench", help="output folder")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel worker processes")
    parser.add_argument("--max-episode-steps", type=int, default=1001, help="steps per episode (upstream: 1001)")
    parser.add_argument("--noise", type=float, default=0.1, help="plan-oracle action noise (upstream: 0.1)")
    parser.add_argument("--noise-smoothing", type=float, default=0.5, help="plan-oracle noise smoothing (0.5)")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        train_path, val_path = generate(
            args.env,
            args.out,
            args.episodes,
            seed=args.seed,
            workers=args.workers,
            max_episode_steps=args.max_episode_steps,
            noise=args.noise,
            noise_smoothing=args.noise_smoothing,
        )
    except ValueError as e:
        sys.exit(f"error: {e}")
    steps = args.episodes * args.max_episode_steps
    elapsed = time.time() - start
    print(f"wrote {train_path} and {val_path} ({steps} training steps) in {elapsed:.0f}s")


if __name__ == "__main__":
    main()
