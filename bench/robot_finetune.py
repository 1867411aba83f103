"""Robot fine-tuning with a simulated robot (OGBench single-task, state): learning per block of episodes, the
learner's speed, and the chunk latency the robot sees while the learner trains against serving alone.

    python bench/robot_finetune.py --checkpoint runs/cube-single-task1-lps-s0 --out runs/bench-robot --episodes 40 --compile

It starts `tools/finetune_robot.py` from the checkpoint (`--rewards source`: the robot reports the task's own
labels) and runs the simulated robot (`visual_lps.envs.simulated_robot`) through its server:

- learning: `--episodes` episodes as fast as the simulator goes, the robot waiting after each episode until the
  learner has made the updates it owes (`--utd` per step: the reference's "updates between episodes"); the
  success rate per block of `--block` episodes, without and (`--patience P`) with a simulated human who takes
  over after P steps without success (the policy's own successes are counted apart: those before any take-over);
- latency (`--latency-episodes`, 0 to skip): episodes at `--rate` Hz against `tools/serve_policy.py` (no reports),
  against the fine-tuning server with every episode discarded (the same traffic, the learner idle), and against it
  while the learner trains flat out (it owes more updates than the robot's steps pay for): the round trips of
  the chunk requests and the step reports, each control step's work, and the missed control periods.

Prints one markdown table per measurement and writes them, with the raw figures, to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def start(command: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, *command, "--port", "0", "--device", "cpu"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    for line in process.stdout:
        print("  " + line.rstrip(), flush=True)
        match = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
        if match:
            return process, int(match.group(1))
    raise SystemExit(f"error: {command[0]} did not start: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=300)
        print("".join("  " + line + "\n" for line in out.splitlines()[-3:]), end="")
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for_version(client, version: int, observation) -> int:
    from visual_lps.deploy.serving import OBSERVATION_KEY

    while True:
        served = client.infer({OBSERVATION_KEY: observation})["policy_version"]
        if served >= version:
            return served
        time.sleep(0.05)


def updates_per_second(run: Path) -> float | None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    if "perf/steps_per_second" not in events.Tags()["scalars"]:
        return None
    values = [e.value for e in events.Scalars("perf/steps_per_second")][1:]  # the first includes waiting
    return statistics.median(values) if values else None


def learning(args: argparse.Namespace, name: str, patience: int | None) -> dict:
    """Episodes through the fine-tuning server; success per block."""
    from visual_lps.deploy.serving import RobotClient
    from visual_lps.envs.simulated_robot import SimulatedRobot

    run = args.out / name
    process, port = start(["tools/finetune_robot.py", "--checkpoint", str(args.checkpoint), "--out", str(run),
                           "--rewards", "source", "--utd", str(args.utd), "--save-every", "5000",
                           "--log-every", "200", "--learner-threads", str(args.learner_threads), *args.compile],
                          args.out / f"{name}.log")
    rows = []
    try:
        with RobotClient(port=port) as client:
            robot = SimulatedRobot(client, args.env, args.sparse, args.max_episode_steps, patience=patience)
            start_version = client.infer({"observation": np.zeros(robot.env.env.observation_space.shape,
                                                                  np.float32)})["policy_version"]
            steps = 0
            for episode in range(args.episodes):
                log = robot.run_episode(args.seed * 10_000 + episode)
                steps += len(log.actions)
                human = any(log.interventions)
                rows.append({"episode": episode, "label": log.label, "steps": len(log.actions),
                             "human_steps": int(sum(log.interventions)), "own_success": log.label == "success"
                             and not human, "first_version": log.versions[0]})
                wait_for_version(client, start_version + args.utd * steps, log.observations[0])
                if (episode + 1) % args.block == 0:
                    block = rows[-args.block:]
                    print(f"  {name}: episodes {episode + 2 - args.block}-{episode + 1}: success "
                          f"{np.mean([r['label'] == 'success' for r in block]):.0%}, the policy's own "
                          f"{np.mean([r['own_success'] for r in block]):.0%}", flush=True)
            robot.close()
    finally:
        stop(process)
    blocks = [rows[i:i + args.block] for i in range(0, len(rows), args.block)]
    return {"episodes": rows, "updates_per_second": updates_per_second(run),
            "blocks": [{"episodes": f"{b[0]['episode'] + 1}-{b[-1]['episode'] + 1}",
                        "success": float(np.mean([r["label"] == "success" for r in b])),
                        "own_success": float(np.mean([r["own_success"] for r in b])),
                        "human_steps": float(np.mean([r["human_steps"] / r["steps"] for r in b]))} for b in blocks]}


LATENCY_SETTINGS = {
    "serving alone (serve_policy.py)": "plain",
    "fine-tuning server, learner idle": "idle",
    "fine-tuning server, learner training": "training",
}
"""the three latency measurements: plain serving (no reports); the fine-tuning server with the same traffic but
every episode discarded (stored, never trained on: the learner owes nothing); the learner training throughout"""


def latency(args: argparse.Namespace, setting: str) -> dict:
    """Chunk and report round trips, and missed periods, at `--rate` Hz in one of LATENCY_SETTINGS."""
    from visual_lps.deploy.serving import RobotClient
    from visual_lps.envs.simulated_robot import SimulatedRobot

    run = args.out / f"latency-{setting}"
    if setting == "plain":
        command = ["tools/serve_policy.py", "--checkpoint", str(args.checkpoint)]
    else:  # --utd high enough that a training learner never catches up: it trains throughout
        command = ["tools/finetune_robot.py", "--checkpoint", str(args.checkpoint), "--out", str(run), "--rewards",
                   "source", "--utd", "1000", "--save-every", "100000", "--log-every", "200",
                   "--learner-threads", str(args.learner_threads), *args.compile]
    process, port = start(command, args.out / f"latency-{setting}.log")
    chunks, reports, steps, late, versions = [], [], [], 0, set()
    try:
        with RobotClient(port=port) as client:
            if setting == "training":  # one episode first, so that the learner has updates to make
                SimulatedRobot(client, args.env, args.sparse, max_episode_steps=20).run_episode(999_999)
            robot = SimulatedRobot(client, args.env, args.sparse, args.max_episode_steps, rate_hz=args.rate,
                                   reports=setting != "plain")
            for episode in range(args.latency_episodes):
                log = robot.run_episode(args.seed * 10_000 + 5_000 + episode,
                                        label_override="discard" if setting == "idle" else None)
                chunks += log.chunk_seconds
                reports += log.report_seconds
                steps += log.step_seconds
                late += log.late_periods
                versions |= set(log.versions)
            robot.close()
    finally:
        stop(process)
    ms = {name: 1000 * np.array(values) for name, values in (("chunk", chunks), ("report", reports),
                                                              ("step", steps)) if values}
    result = {"chunks": len(chunks), "periods": len(steps), "missed_periods": late,
              "weight_versions_seen": len(versions)}
    for name, values in ms.items():
        result |= {f"{name}_p50_ms": float(np.percentile(values, 50)), f"{name}_p99_ms": float(np.percentile(values, 99)),
                   f"{name}_max_ms": float(values.max())}
    if setting == "training":
        result["updates_per_second"] = updates_per_second(run)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trained state run (e.g. cube-single) to fine-tune")
    parser.add_argument("--out", type=Path, required=True, help="folder for the fine-tuning runs and results.json")
    parser.add_argument("--env", default="cube-single-singletask-task1-v0", help="the simulated robot's task")
    parser.add_argument("--sparse", action="store_true", help="the task's sparse labels (scene, puzzle-3x3: as the "
                                                              "run trained)")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="shorter episodes than the task's")
    parser.add_argument("--episodes", type=int, default=60, help="episodes per learning measurement (0: skip)")
    parser.add_argument("--block", type=int, default=10, help="episodes per reported block")
    parser.add_argument("--patience", type=int, default=100,
                        help="steps without success before the simulated human takes over (second measurement)")
    parser.add_argument("--no-human", action="store_true", help="skip the measurement with interventions")
    parser.add_argument("--utd", type=int, default=1, help="updates per robot step")
    parser.add_argument("--rate", type=float, default=15.0, help="control rate of the latency measurement (Hz)")
    parser.add_argument("--latency-episodes", type=int, default=3, help="episodes per latency measurement (0: skip)")
    parser.add_argument("--learner-threads", type=int, default=1, help="torch threads of the learner")
    parser.add_argument("--seed", type=int, default=0, help="seeds the robot's episodes")
    parser.add_argument("--compile", action="store_true", help="compile the learner's update (finetune_robot.py)")
    args = parser.parse_args(argv)
    if args.episodes < 0 or args.block < 1 or args.utd < 1 or args.rate <= 0 or args.latency_episodes < 0:
        parser.error("--block and --utd must be at least 1, --rate positive, --episodes and --latency-episodes >= 0")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty: give a new folder (nothing is overwritten)")
    import visual_lps  # noqa: F401  (MUJOCO_GL before the simulator loads)

    args.compile = ["--compile"] if args.compile else []
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"checkpoint": str(args.checkpoint), "env": args.env, "utd": args.utd}
    if args.episodes:
        report_learning(args, results)
    if args.latency_episodes:
        results["latency"] = {name: latency(args, setting) for name, setting in LATENCY_SETTINGS.items()}
        print(f"\n| at {args.rate:g} Hz, ms | chunk p50 | chunk p99 | chunk max | report p50 | report p99 | step p99 | "
              f"missed periods | learner updates/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, r in results["latency"].items():
            cells = [f"{r[key]:.2f}" if key in r else "-" for key in
                     ("chunk_p50_ms", "chunk_p99_ms", "chunk_max_ms", "report_p50_ms", "report_p99_ms", "step_p99_ms")]
            rate = r.get("updates_per_second")
            print(f"| {name} | " + " | ".join(cells) + f" | {r['missed_periods']} of {r['periods']} | "
                  f"{'-' if rate is None else f'{rate:.1f}'} |")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {args.out / 'results.json'}")
    return 0


def report_learning(args: argparse.Namespace, results: dict) -> None:
    results["learning"] = {"policy alone": learning(args, "ft-policy", None)}
    if not args.no_human:
        results["learning"][f"human after {args.patience} steps"] = learning(args, "ft-human", args.patience)
    print("\n| episodes | " + " | ".join(f"{name}: success (policy's own)" for name in results["learning"]) + " |")
    print("| --- |" + " --- |" * len(results["learning"]))
    for i, block in enumerate(next(iter(results["learning"].values()))["blocks"]):
        cells = [f"{r['blocks'][i]['success']:.0%} ({r['blocks'][i]['own_success']:.0%})"
                 for r in results["learning"].values()]
        print(f"| {block['episodes']} | " + " | ".join(cells) + " |")
    for name, result in results["learning"].items():
        print(f"learner, {name}: {result['updates_per_second'] or float('nan'):.1f} updates/s")


if __name__ == "__main__" and (status := main()):
    sys.exit(status)
