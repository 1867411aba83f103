"""The small default job: generate a small cube-single dataset, train LPS briefly with `accelerate launch`,
evaluate it, and print the success rate and where the logs are. About 10 minutes on 2 CPU cores.

    python tools/quickstart.py [--episodes 100] [--steps 5000] [--eval-episodes 20]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from visual_lps.runs.folder import RunFolder

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> None:
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def free_run_folder(base: str) -> str:
    """`base`, or `base-N` for the first N that holds no run: a second quickstart never replaces the first."""
    candidate, n = base, 1
    while RunFolder(REPO / candidate).config.exists() or RunFolder(REPO / candidate).checkpoints.exists():
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="episodes of 1001 steps to generate")
    parser.add_argument("--steps", type=int, default=5000, help="training steps")
    parser.add_argument("--eval-episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--out", help="run folder (default: runs/quickstart, or the next free runs/quickstart-N)")
    args = parser.parse_args()
    args.out = args.out or free_run_folder("runs/quickstart")

    start = time.time()
    bin_dir = Path(sys.executable).parent
    data_dir = REPO / "data" / "quickstart"
    if not (data_dir / "cube-single-play-v0.npz").exists():
        run([sys.executable, "tools/generate_ogbench.py", "--env", "cube-single-play-v0", "--episodes",
             str(args.episodes), "--seed", "0", "--out", str(data_dir), "--workers", str(os.cpu_count() or 1)])
    # On a CPU, accelerate launch gives each process one thread unless told otherwise.
    threads = str(os.cpu_count() or 1)
    run([str(bin_dir / "accelerate"), "launch", "--num_processes", "1", "--num_cpu_threads_per_process", threads,
         "train.py", "--task", "cube-single",
         "--dataset-dir", str(data_dir), "--steps", str(args.steps), "--eval-every", str(args.steps),
         "--eval-episodes", str(args.eval_episodes), "--save-every", str(args.steps), "--log-every", "100",
         "--out", args.out])
    print(f"\nquickstart done in {(time.time() - start) / 60:.1f} min. Logs: tensorboard --logdir {args.out}/tb; "
          f"evaluate again: python tools/evaluate.py --checkpoint {args.out} --episodes 50")


if __name__ == "__main__":
    main()
