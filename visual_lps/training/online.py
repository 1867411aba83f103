"""The online phase that follows the offline one (`--online-steps N`): the agent acts in the task's simulator, every
step goes into the replay buffer that holds the offline data (`visual_lps.data.replay`), and `--utd` updates
follow each environment step, as in the public LPS code's online mode.

Each finished episode is written to the run folder's online/ as it ends. Checkpoints fall on episode ends (a
save that comes due mid-episode waits for it), so a checkpoint's buffer is exactly the offline data and the
episode files, and a run killed at any point resumes from one bit-exactly; a stop signal, and the end of the
budget, close the episode in progress as a truncation (its last observation bootstraps), so nothing is lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from visual_lps.data.episode_files import episode_files, episode_path, read_episode, set_aside_after, write_episode
from visual_lps.data.replay import ReplayBuffer
from visual_lps.deploy.policy import NonFiniteActionError, Policy
from visual_lps.envs.online import EnvironmentFailure, FinishedEpisode, OnlineActor
from visual_lps.runs.checkpoints import latest_checkpoint
from visual_lps.runs.folder import PHASE_BOUNDARY, RunFolder
from visual_lps.tasks import Task, TaskData
from visual_lps.training.signals import StopRequest

ONLINE_SEED = 1_000_000_000
"""online episode i of seed s is reset with seed ONLINE_SEED + s * 100_000 + i (evaluation uses s * 100_000 + j)"""


@dataclass
class OnlinePhase:
    actor: OnlineActor
    folder: Path
    """online/ of the run folder"""
    facts: dict
    """what every episode file records about its origin"""
    bar: tqdm
    last_env_log: tuple[float, int]
    """(time, environment steps) at the last log"""
    save_pending: bool = False


def describe_buffer(buffer: ReplayBuffer, online_steps: int) -> str:
    """The buffer's size now and, for observations of more than a few numbers, the memory the online phase adds."""
    row_bytes = sum(t[0].numel() * t.element_size() for t in
                    (buffer.observations.values() if isinstance(buffer.observations, dict) else [buffer.observations]))
    limit = f"capacity {buffer.capacity:,} rows" if buffer.capacity else "no capacity limit"
    added = min(online_steps * 1.02, buffer.capacity - buffer.size) if buffer.capacity else online_steps * 1.02
    memory = f", about {added * row_bytes / 2**30:.2f} GiB more observations online" if row_bytes > 4096 else ""
    mix = ("batches uniform over all of it" if buffer.offline_ratio is None
           else f"{buffer.offline_ratio:.0%} of each batch offline")
    return f"replay buffer: {buffer.size:,} rows, {limit}{memory}, {mix} (placed: {buffer.placement})"


def start_online(run, task: Task, task_data: TaskData) -> OnlinePhase:
    """The simulator, the acting policy, and on resume the buffer refilled with the checkpoint's episodes."""
    cfg, progress, buffer = run.train_cfg, run.progress, run.sampler
    try:
        env = task.make_online_environment(cfg, task_data)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    folder = RunFolder(run.run_dir).online
    later = set_aside_after(folder, progress.episodes, progress.step)
    if later:
        run.accelerator.print(f"note: {len(later)} online episode(s) recorded after the checkpoint moved to "
                              f"{folder / f'after_step_{progress.step}'}; this run records "
                              f"them again")
    files = episode_files(folder)
    if len(files) != progress.episodes:
        raise SystemExit(f"error: --resume: the checkpoint trained on {progress.episodes} online episodes but "
                         f"{folder} holds {len(files)} episode files")
    shape = None if isinstance(buffer.observations, dict) else tuple(buffer.observations.shape[1:])
    for path in files:
        buffer.add_episode(read_episode(path, shape))
    folder.mkdir(parents=True, exist_ok=True)
    policy = Policy(run.core, run.accelerator.device)
    run.core.train()  # Policy put it in eval mode; no network reads the mode, the flag is kept for clarity
    bounds = (run.core.action_low.cpu().numpy(), run.core.action_high.cpu().numpy())
    actor = OnlineActor(env, policy, run.core.data_needs.frame_stack, buffer, seed=ONLINE_SEED + cfg.seed * 100_000,
                        first_episode=progress.episodes, explore_noise=cfg.explore_noise, action_bounds=bounds)
    facts = {"task": cfg.task, "task_id": cfg.task_id, "sparse": task_data.sparse, "agent": cfg.agent,
             "run": str(run.run_dir), "env_name": getattr(env.env.spec, "id", None)}
    bar = tqdm(total=cfg.online_steps, initial=progress.env_steps, desc="online", unit="env step",
               dynamic_ncols=True, disable=not cfg.progress)
    run.accelerator.print(
        f"online: {cfg.online_steps - progress.env_steps:,} environment steps to go in {facts['env_name']} (episodes "
        f"of at most {env.max_episode_steps} steps, chunks open loop"
        f"{f', exploration noise {cfg.explore_noise:g}' if cfg.explore_noise else ''}), {cfg.utd} update(s) per step after "
        f"{cfg.warmup_steps:,} warm-up steps; episodes -> {folder}")
    run.accelerator.print(describe_buffer(buffer, cfg.online_steps - progress.env_steps))
    if progress.env_steps == 0:  # where tools/report.py marks the boundary between the phases
        run.accelerator.log({PHASE_BOUNDARY: progress.step}, step=progress.step)
    return OnlinePhase(actor, folder, facts, bar, (time.time(), progress.env_steps))


def record_episode(run, phase: OnlinePhase, episode: FinishedEpisode) -> None:
    """The episode's file (atomically), its log line and scalars."""
    write_episode(episode_path(phase.folder, episode.index), episode.rows, episode.success,
                  phase.facts | {"episode": episode.index, "seed": episode.seed})
    run.progress.episodes += 1
    run.accelerator.log({"online/success": float(episode.success), "online/return": episode.env_return,
                         "online/length": episode.length, "online/episodes": run.progress.episodes},
                        step=run.progress.step)
    phase.bar.set_postfix({"episodes": run.progress.episodes, "last": "success" if episode.success else "failure"})


def run_online(run, phase: OnlinePhase, stop: StopRequest, evaluate, log_training, checkpoint) -> None:
    """Act, store, update until --online-steps environment steps, or until a stop signal (the episode in progress
    closed and kept, a checkpoint written). The trainer's evaluate / log / checkpoint functions are passed in."""
    cfg, progress, outcome = run.train_cfg, run.progress, run.outcome
    run.bar = phase.bar
    started_at, evaluated_at = progress.env_steps, None
    try:
        while progress.env_steps < cfg.online_steps:
            try:
                finished = phase.actor.step()
            except (EnvironmentFailure, NonFiniteActionError) as e:
                last = latest_checkpoint(run.run_dir)
                kept = f"the last checkpoint is {last}" if last else "no checkpoint was written"
                raise SystemExit(f"error: {e}; the episode in progress is not kept, the run stops here "
                                 f"({progress.episodes} episodes are in {phase.folder}; {kept})") from None
            progress.env_steps += 1
            phase.bar.update()
            if progress.env_steps > cfg.warmup_steps:
                for _ in range(cfg.utd):
                    run.update(run.sampler.sample(cfg.batch_size))
                    progress.step += 1
                    outcome.step = step = progress.step
                    if step % cfg.log_every == 0:
                        log_training(run, step)
                        log_env_rate(run, phase)
                    if step % cfg.eval_every == 0:
                        outcome.metrics, evaluated_at = evaluate(run, step), step
                    if step % cfg.save_every == 0:
                        phase.save_pending = True
            stopping = stop.should_stop(progress.step)
            if finished is None and (stopping or progress.env_steps == cfg.online_steps):
                finished = phase.actor.end_episode()  # closed as a truncation: nothing is lost
            if finished is not None:
                record_episode(run, phase, finished)
                if phase.save_pending and progress.env_steps < cfg.online_steps and not stopping:
                    checkpoint(run, progress.step)
                    phase.save_pending = False
            if stopping:
                checkpoint(run, progress.step)
                outcome.stopped_by = stop.signal_name or "a signal to another process"
                return
        if progress.env_steps == cfg.online_steps and progress.env_steps > started_at:
            if run.update.calls:
                log_training(run, progress.step)
                log_env_rate(run, phase)
            if evaluated_at != progress.step:
                outcome.metrics = evaluate(run, progress.step)
            checkpoint(run, progress.step)
    finally:
        phase.bar.close()
        phase.actor.env.close()


def log_env_rate(run, phase: OnlinePhase) -> None:
    now, env_steps = time.time(), run.progress.env_steps
    then, then_steps = phase.last_env_log
    phase.last_env_log = (now, env_steps)
    run.accelerator.log({"perf/env_steps_per_second": (env_steps - then_steps) / max(now - then, 1e-9)},
                        step=run.progress.step)


def online_summary(folder: Path) -> str:
    """Success rate of the episodes in `folder` (for the end of a run's log)."""
    files = episode_files(folder)
    if not files:
        return "no online episode"
    import h5py

    successes = []
    for path in files:
        with h5py.File(path, "r") as file:
            successes.append(bool(file["data/demo_0"].attrs["success"]))
    return f"{len(files)} online episodes, success rate {np.mean(successes):.2%}"
