"""The online loop's speed against the offline update rate (state tasks, utd 1).

Runs `train.py` with `--steps N --online-steps N` (compiled, no evaluation) and reads what it logged: the offline
updates/s (`perf/steps_per_second` before the online phase) and the online environment steps/s and updates/s
(`perf/env_steps_per_second`, `perf/steps_per_second` after it). Then, from the run's final checkpoint, it times
collection alone (the policy's chunks, the simulator and the replay buffer, no update) so that the share of an
online step that is not the update is measured, not inferred.

    python bench/online_speed.py --task cube-single --steps 3000 --dataset-dir data/ogbench
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def logged(run: Path, boundary: int) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    rate = events.Scalars("perf/steps_per_second")
    # the first log of each phase includes compiling / the phase's start: left out
    offline = [e.value for e in rate if e.step <= boundary][1:]
    online = [e.value for e in rate if e.step > boundary][1:]
    env = [e.value for e in events.Scalars("perf/env_steps_per_second")][1:]
    return {"offline updates/s": statistics.median(offline), "online updates/s": statistics.median(online),
            "online env steps/s": statistics.median(env)}


def collection_rate(run: Path, task: str, dataset_dir: str, steps: int) -> float:
    """Environment steps/s of acting and storing alone, with the trained policy."""
    import torch

    from visual_lps.data.ogbench_data import find_dataset, load_ogbench_task_data
    from visual_lps.data.replay import ReplayBuffer
    from visual_lps.deploy.policy import Policy
    from visual_lps.envs.ogbench_env import OGBenchOnlineEnvironment
    from visual_lps.envs.online import OnlineActor
    from visual_lps.tasks import get_task

    ogbench_task = get_task(task)
    env_name = ogbench_task.eval_env_name(1)
    policy = Policy.load(run, "cpu")
    data = load_ogbench_task_data(find_dataset(ogbench_task.dataset_name, dataset_dir), env_name, ogbench_task.sparse)
    buffer = ReplayBuffer(data, policy.agent.data_needs, torch.device("cpu"), seed=0)
    actor = OnlineActor(OGBenchOnlineEnvironment(env_name, ogbench_task.sparse), policy, policy.frame_stack, buffer,
                        seed=0)
    for _ in range(50):
        actor.step()
    start = time.perf_counter()
    for _ in range(steps):
        actor.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cube-single")
    parser.add_argument("--steps", type=int, default=3000, help="offline updates, and online environment steps")
    parser.add_argument("--dataset-dir", default="data/ogbench")
    parser.add_argument("--log-every", type=int, default=250, help="updates between the rates logged")
    parser.add_argument("--collect-steps", type=int, default=1000, help="environment steps timed for collection alone")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "train.py", "--task", args.task, "--dataset-dir", args.dataset_dir, "--out",
                   str(run), "--steps", str(args.steps), "--online-steps", str(args.steps), "--eval-episodes", "0",
                   "--log-every", str(args.log_every), "--save-every", str(10 * args.steps), "--no-progress",
                   "--compile" if args.compile else "--no-compile"]
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        rates = logged(run, args.steps)
        rates["collection alone, env steps/s"] = collection_rate(run, args.task, args.dataset_dir, args.collect_steps)
    offline = rates["offline updates/s"]
    print(f"| {args.task}, utd 1 | " + " | ".join(f"{name} {value:.1f}" for name, value in rates.items()) + " |")
    print(f"online loop / offline update rate: {rates['online env steps/s'] / offline:.2f}; collection's share of an "
          f"online step: {rates['online env steps/s'] / rates['collection alone, env steps/s']:.1%}")


if __name__ == "__main__":
    main()
