"""Fine-tune a trained policy on the robot: serve it, take the robot's episodes back, train on them, serve the
new weights.

    python tools/finetune_robot.py --checkpoint runs/robot-mytask-lps-s0 --out runs/robot-mytask-ft \\
        [--dataset OFFLINE.hdf5] [--utd 1] [--offline-ratio 0.5] [--rewards sparse] [--host/--port/--token-file]
    python tools/finetune_robot.py --out runs/robot-mytask-ft --resume      # a restarted learner

The server speaks the openpi protocol of tools/serve_policy.py (a plain openpi client just gets actions; every
reply also carries `policy_version`) and takes the robot's reports (`visual_lps.deploy.serving.RobotClient`; see
examples/robot_loop.py --finetune): each executed step (observation, action, whether a human was in control, the
robot's reward if it has one) and each episode's end with the operator's label, success, failure or discard.

Every episode is stored as it ends, atomically, in --out: robot/episode_NNNNNN.hdf5, listed by
robot_episodes.hdf5 (the project's HDF5 format; mask/train holds the episodes trained on). A robot that
disconnects mid-episode leaves it stored as incomplete, never trained on; discarded episodes are kept, never
trained on. Rewards come from the label by the converter's schemes (--rewards): 'sparse' (1 at the end of a
success, terminal there), 'step-penalty' (-1 per step, 0 at a success, --failure-penalty at a failure, terminal
at both), or 'source' (the robot's own per-step rewards, terminal at the end of a success). The default is the
scheme the offline robot file was converted with ('sparse' when it records none): one reward function offline
and online.

A learner process trains beside the server: --utd updates per robot step of the episodes trained on, on batches
drawn --offline-ratio from the offline data and the rest from the robot's episodes; every --publish-every updates
its weights replace the served ones between two requests (the robot never waits for a swap). Checkpoints are
written as train.py writes them (every --save-every updates and at the stop), so Policy.load, export, evaluation
and `train.py --resume` read --out. The server listens on loopback by default; any other address needs a token
(--token-file or $VISUAL_LPS_TOKEN), as tools/serve_policy.py. SIGINT or SIGTERM stops both (a checkpoint first;
exit 130 or 143); a learner that fails stops the server with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from visual_lps.cli.serve_policy import TOKEN_VARIABLE, is_loopback, port_number, read_token

READY_TIMEOUT = 600.0
"""seconds the learner may take to load the data and build the agent"""
STOP_TIMEOUT = 120.0
"""seconds the learner may take to write its last checkpoint"""


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


positive.__name__ = "positive integer"


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value}: must be in [0, 1]")
    return value


fraction.__name__ = "fraction"


def build_parser() -> argparse.ArgumentParser:
    from visual_lps.data.robot_hdf5 import REWARD_SCHEMES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="the trained run folder (its newest checkpoint) or a checkpoint folder")
    parser.add_argument("--out", required=True, help="the fine-tuning run's folder (new, or continued with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the fine-tuning run in --out: its newest "
                                                              "checkpoint and every episode it stored")
    parser.add_argument("--dataset", help="offline robot HDF5 file mixed into the batches (default: the data the "
                                          "run trained on; only for --task robot runs)")
    parser.add_argument("--utd", type=positive, default=1, help="updates per robot step received (default 1)")
    parser.add_argument("--offline-ratio", type=fraction, default=0.5,
                        help="fraction of each batch from the offline data, the rest from the robot's episodes "
                             "(default 0.5, the reference's robot fine-tuning; all offline until an episode is in)")
    parser.add_argument("--rewards", choices=REWARD_SCHEMES, default=None,
                        help="how an episode's label becomes rewards (default: the offline file's scheme, else sparse)")
    parser.add_argument("--failure-penalty", type=float, default=None,
                        help="the last reward of a failure with --rewards step-penalty (default: the offline file's, "
                             "else -100)")
    parser.add_argument("--publish-every", type=positive, default=10, help="updates between weight swaps (default 10)")
    parser.add_argument("--save-every", type=positive, default=1000, help="updates between checkpoints (default 1000)")
    parser.add_argument("--log-every", type=positive, default=100, help="updates between logged metrics (default 100)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the learner's update (default: on CUDA; on a CPU it pays off in sessions of "
                             "tens of thousands of updates, after about a minute of compiling)")
    parser.add_argument("--learner-threads", type=positive, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads of the learner process (default: all cores but one, left to serving)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--token-file", default=None, help="file whose first line is the secret clients must "
                                                           f"present (or set ${TOKEN_VARIABLE}); required off loopback")
    parser.add_argument("--token", default=None, help="the secret itself (visible in ps: prefer --token-file)")
    parser.add_argument("--device", default="auto", help="torch device of the policy and the learner")
    return parser


def offline_labels(path: str | None) -> tuple[str, float]:
    """The reward scheme and failure penalty an offline robot file was converted with (sparse, -100 if none)."""
    scheme, penalty = "sparse", -100.0
    if path:
        import h5py

        try:
            with h5py.File(path, "r") as file:
                env_args = json.loads(file["data"].attrs["env_args"])
            scheme = env_args.get("reward_scheme", scheme)
            penalty = float(env_args.get("failure_penalty", penalty))
        except (OSError, KeyError, ValueError, TypeError):
            pass  # the learner names what is wrong with the file when it loads it
    return (scheme if scheme != "source" else "sparse"), penalty


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    token = read_token(args, parser)
    if not is_loopback(args.host) and token is None:
        parser.error(f"--host {args.host} is reachable from other machines: give --token-file (or "
                     f"${TOKEN_VARIABLE}) so that only your clients are served")
    if args.resume == (args.checkpoint is not None):
        parser.error("give --checkpoint (start fine-tuning a trained run) or --resume (continue the fine-tuning "
                     "run in --out), one of them")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a run folder")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    from visual_lps.runs.lock import RunLock, RunLockError

    try:
        lock = RunLock.acquire(out)
    except RunLockError as e:
        print(f"error: --out {e}", file=sys.stderr)
        return 1
    try:
        if lock.taken_over:
            print(f"warning: {lock.taken_over}")
        return finetune(args, token, out)
    finally:
        lock.release()


class Refused(Exception):
    """What stops the command before it serves: one `error:` line."""


def starting_point(args: argparse.Namespace, out: Path):
    """The checkpoint fine-tuning starts from (the trained run's, or with --resume the fine-tuning run's newest),
    loaded, and the update count it holds."""
    import yaml

    from visual_lps.deploy.policy import resolve_device
    from visual_lps.runs.checkpoints import latest_complete_checkpoint, load_agent
    from visual_lps.runs.folder import RUN_FILES
    from visual_lps.training.checkpointing import load_training_state

    if args.resume:
        source, _ = latest_complete_checkpoint(out)
        if source is None:
            raise Refused(f"--resume: {out / 'checkpoints'} holds no complete checkpoint")
    else:
        held = [name for name in (*RUN_FILES, "robot") if (out / name).exists()]
        if held:
            raise Refused(f"--out {out} already holds a run ({', '.join(held)}); continue its fine-tuning with "
                          f"--resume, or give a new folder")
        source = args.checkpoint
    try:  # a damaged or foreign checkpoint is one line
        loaded = load_agent(source, resolve_device(args.device))
        start_step, _ = load_training_state(loaded.path)
    except (ValueError, OSError, yaml.YAMLError) as e:
        raise Refused(f"{'--resume' if args.resume else '--checkpoint'} {' '.join(str(e).split())}") from None
    return loaded, start_step


def fine_tuning_config(args: argparse.Namespace, loaded, start_step: int, out: Path):
    """The fine-tuning run's TrainConfig (its `steps`: the update count it started from) and its labels' reward
    scheme and failure penalty."""
    cfg = loaded.train_cfg
    if args.dataset and cfg.task != "robot":
        raise Refused(f"--dataset: the run trained on the {cfg.task} task, which reads its own data; --dataset "
                      f"replaces the offline file of --task robot runs")
    if args.dataset and not Path(args.dataset).is_file():
        raise Refused(f"--dataset {args.dataset}: no such file")
    dataset = args.dataset or cfg.dataset
    scheme, penalty = offline_labels(dataset if cfg.task == "robot" else None)
    scheme = args.rewards or scheme
    penalty = penalty if args.failure_penalty is None else args.failure_penalty
    train_cfg = dataclasses.replace(
        cfg, out=str(out), dataset=dataset, steps=cfg.steps if args.resume else start_step, resume=False,
        overwrite=False, progress=False, online_steps=0, utd=args.utd, offline_ratio=args.offline_ratio,
        data_cache="ram", eval_episodes=0, save_every=args.save_every, log_every=args.log_every, keep_last=0,
        compile=args.compile)
    return train_cfg, scheme, penalty


def metadata_of(loaded, policy, scheme: str) -> dict:
    """What a client hears on connecting: as tools/serve_policy.py says it, and that this server fine-tunes."""
    from visual_lps.cli.serve_policy import run_name
    from visual_lps.deploy.serving import OBSERVATION_KEY
    from visual_lps.observations import spec_to_yaml

    cfg, spec = loaded.train_cfg, policy.obs_spec
    return {"run": run_name(loaded.path), "checkpoint": loaded.path.name, "agent": cfg.agent, "task": cfg.task,
            "horizon": policy.horizon, "action_dim": policy.action_dim, "frame_stack": policy.frame_stack,
            "observation_spec": spec_to_yaml(spec) if isinstance(spec, dict) else {OBSERVATION_KEY: list(spec)},
            "fine_tuning": True, "reward_scheme": scheme}


def finetune(args: argparse.Namespace, token: str | None, out: Path) -> int:
    import torch
    import torch.multiprocessing as mp

    from visual_lps.data.robot_episodes import RobotEpisodeStore
    from visual_lps.deploy.episode_recorder import EpisodeRecorder
    from visual_lps.deploy.policy import Policy
    from visual_lps.deploy.serving import PolicyServer
    from visual_lps.deploy.swappable import SwappablePolicy
    from visual_lps.training.robot_learner import (
        EpisodeNote,
        LearnerChannels,
        LearnerSettings,
        SharedWeights,
        StopFlag,
        learner_main,
    )

    try:
        loaded, start_step = starting_point(args, out)
        train_cfg, scheme, penalty = fine_tuning_config(args, loaded, start_step, out)
        facts = {"run": out.name, "agent": train_cfg.agent, "task": train_cfg.task, "started_from": str(loaded.path)}
        try:
            store = RobotEpisodeStore(out, scheme, penalty, facts)
        except ValueError as e:
            raise Refused(f"--out {e}") from None
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)  # serving: one chunk at a time; the cores are the learner's
    policy = Policy(loaded.agent, args.device)

    context = mp.get_context("spawn")
    channels = LearnerChannels(SharedWeights(policy.agent.state_dict(), context, start_step), context.Queue(),
                               context.Queue(), StopFlag(context))
    settings = LearnerSettings(train_cfg, loaded.agent_cfg, str(loaded.path), scheme, args.publish_every,
                               args.learner_threads)
    learner = context.Process(target=learner_main, args=(settings, channels), name="robot-learner", daemon=True)
    learner.start()
    print(f"starting the learner (loading {train_cfg.dataset or train_cfg.task + ' data'} and {loaded.path})",
          flush=True)
    try:
        status = wait_ready(learner, channels)
    except KeyboardInterrupt:  # Ctrl-C while the learner loads: nothing to save yet
        learner.kill()
        learner.join()
        print("fine-tuning stopped by SIGINT before it served", flush=True)
        return 128 + signal.SIGINT
    if status[0] != "ready":
        print(f"error: {status[1]}", file=sys.stderr)
        learner.join(STOP_TIMEOUT)
        return 1
    print(status[1], flush=True)
    print(f"robot episodes -> {store.index} ({len(store)} stored; rewards by the '{scheme}' scheme)", flush=True)

    def stored(episode) -> None:
        channels.episodes.put(EpisodeNote(str(episode.path), episode.label, episode.steps, episode.interventions,
                                          episode.trained_on))
        print(f"episode {episode.index}: {episode.label}, {episode.steps} steps"
              f"{f', {episode.interventions:.0%} by a human' if episode.interventions else ''} -> "
              f"{episode.path.relative_to(out)}{'' if episode.trained_on else ' (not trained on)'}; serving the "
              f"weights of update {served.version}", flush=True)

    served = SwappablePolicy(policy, start_step)
    recorder = EpisodeRecorder(store, policy.step_spec, policy.action_dim, stored)
    server = PolicyServer(served, metadata_of(loaded, policy, scheme), token, recorder)
    outcome = asyncio.run(serve(server, served, learner, channels, args.host, args.port))
    channels.stop.set()
    learner.join(STOP_TIMEOUT)
    final = drain_status(channels)
    if learner.is_alive():
        learner.kill()
        print(f"error: the learner did not stop within {STOP_TIMEOUT:.0f} s; its last checkpoint may be older",
              file=sys.stderr)
        return 1
    if isinstance(outcome, str) or (final and final[0] == "error"):
        print(f"error: {outcome if isinstance(outcome, str) else final[1]}", file=sys.stderr)
        return 1
    if final:
        print(final[1])
    print(f"fine-tuning stopped by {signal.Signals(outcome).name}; continue with: tools/finetune_robot.py --out {out} "
          f"--resume", flush=True)
    return 128 + outcome


def wait_ready(learner, channels) -> tuple[str, str]:
    import queue

    deadline = time.time() + READY_TIMEOUT
    while time.time() < deadline:
        try:
            return channels.status.get(timeout=0.5)
        except queue.Empty:
            if not learner.is_alive():
                return "error", f"the learner process ended (exit code {learner.exitcode}) before it was ready"
    return "error", f"the learner was not ready within {READY_TIMEOUT:.0f} s"


def drain_status(channels) -> tuple[str, str] | None:
    import queue

    last = None
    while True:
        try:
            last = channels.status.get(timeout=0.2)
        except queue.Empty:
            return last


async def serve(server, served, learner, channels, host: str, port: int) -> int | str:
    """Serve until a signal (its number) or until the learner fails (its message); the newest weights swapped in
    as the learner publishes them."""
    import queue

    from visual_lps.training.robot_learner import POLL_SECONDS

    loop = asyncio.get_running_loop()
    stop: asyncio.Future = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda s=signum: stop.done() or stop.set_result(s))

    async def follow_learner() -> None:
        while not stop.done():
            newer = await asyncio.to_thread(channels.weights.take_newer, served.version)
            if newer is not None:
                await asyncio.to_thread(served.load, *newer)
            try:
                kind, text = channels.status.get_nowait()
            except queue.Empty:
                kind, text = None, ""
            if kind == "error" or not learner.is_alive():
                stop.done() or stop.set_result(text or f"the learner process ended (exit code {learner.exitcode})")
            await asyncio.sleep(POLL_SECONDS)

    def ready(bound: int) -> None:
        print(f"serving {server.metadata['run']} for fine-tuning on ws://{host}:{bound} (chunks of "
              f"{served.horizon} actions of {served.action_dim}; Ctrl-C stops)", flush=True)

    follower = asyncio.create_task(follow_learner())
    try:
        await server.serve(host, port, stop, ready)
    except OSError as e:
        stop.done() or stop.set_result(f"cannot listen on {host}:{port} ({e.strerror or e})")
    follower.cancel()
    return stop.result()


if __name__ == "__main__":
    sys.exit(main())
