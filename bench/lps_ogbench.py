"""Learning benchmark: LPS on a state OGBench task from a 1M-transition dataset made with the upstream procedure.

Generates `data/ogbench/<task>-play-v0.npz` (1000 episodes of 1001 steps) if it is missing, trains LPS with the
task's default config, evaluates the task id over 50 episodes every --eval-every steps, then prints the success
rate at each evaluation and the measured training steps/s (TensorBoard's perf/steps_per_second, which includes
data sampling and logging; evaluation time excluded).

    python bench/lps_ogbench.py --task cube-single --steps 100000 --eval-every 25000
    python bench/lps_ogbench.py --task puzzle-3x3 --steps 50000 --eval-every 10000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cube-single", help="a state OGBench task of train.py")
    parser.add_argument("--task-id", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=25_000)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-dir", default="data/ogbench")
    parser.add_argument("--out", help="run folder (default: bench/results/lps-<task>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted benchmark run")
    parser.add_argument("extra", nargs="*", help="more train.py flags, after --")
    args = parser.parse_args()
    args.out = args.out or f"bench/results/lps-{args.task}"

    dataset = f"{args.task}-play-v0"
    if not (REPO / args.dataset_dir / f"{dataset}.npz").exists():
        subprocess.run([sys.executable, "tools/generate_ogbench.py", "--env", dataset, "--episodes",
                        "1000", "--seed", "0", "--out", args.dataset_dir, "--workers", str(os.cpu_count() or 1)],
                       cwd=REPO, check=True)
    cmd = [sys.executable, "train.py", "--task", args.task, "--task-id", str(args.task_id), "--dataset-dir", args.dataset_dir,
           "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--eval-episodes",
           str(args.eval_episodes), "--save-every", str(args.eval_every), "--seed", str(args.seed),
           "--out", args.out, *(["--resume"] if args.resume else []), *args.extra]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)

    scalars = read_scalars(REPO / args.out / "tb")
    success = scalars.get("eval/success_rate", [])
    speed = [v for _, v in scalars.get("perf/steps_per_second", [])]
    speed.sort()
    summary = {
        "success_rate": {step: value for step, value in success},
        "median_steps_per_second": speed[len(speed) // 2] if speed else None,
    }
    print(json.dumps(summary, indent=2))
    (REPO / args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
