"""Training steps/s with 1 and N processes, and the time a checkpoint takes, from real `train.py` runs.

Each run trains the default LPS on a task for --steps steps (batch per process as configured) and writes
TensorBoard scalars; the figures are the median of `perf/steps_per_second` over the log points after the
first and the median of `perf/checkpoint_seconds`. Without GPUs the N-process run is DDP on the CPU
(ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu), the cores split between the processes.

    python bench/process_speed.py [--task cube-single] [--steps 600] [--processes 2] [--save-every 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def scalars(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return [e.value for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def launch(processes: int, args: list[str]) -> None:
    cores = os.cpu_count() or 1
    if processes == 1:
        command = [sys.executable, "train.py", *args]
        env = os.environ
    else:
        launcher = str(Path(sys.executable).parent / "accelerate")
        command = [launcher, "launch", "--multi_gpu", "--num_processes", str(processes)]
        env = os.environ.copy()
        if not torch.cuda.is_available():
            env["ACCELERATE_USE_CPU"] = "1"
            command += ["--num_cpu_threads_per_process", str(max(1, cores // processes))]
        command += ["train.py", *args]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cube-single")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("extra", nargs="*", help="more train.py flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, args.processes):
            out = Path(tmp) / f"p{processes}"
            launch(processes, ["--task", args.task, "--out", str(out), "--steps", str(args.steps), "--no-progress",
                               "--eval-episodes", "0", "--log-every", "50", "--save-every", str(args.save_every),
                               *args.extra])
            rates = scalars(out, "perf/steps_per_second")[1:]
            saves = scalars(out, "perf/checkpoint_seconds")
            print(f"RESULT {processes} process(es): {statistics.median(rates):.1f} steps/s "
                  f"({statistics.median(rates) * processes:.1f} process-steps/s); checkpoint "
                  f"{statistics.median(saves):.2f} s (median of {len(saves)})")


if __name__ == "__main__":
    main()
