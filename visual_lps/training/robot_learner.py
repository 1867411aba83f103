"""The learner of robot fine-tuning (tools/finetune_robot.py), in a process of its own beside the policy server, so
that training never takes the server's time: it trains on the replay buffer of the offline data and the robot's
episodes (`visual_lps.data.replay`, the online phase's buffer), `utd` updates per robot step received, and
publishes its weights to the server through shared memory (`SharedWeights`); checkpoints as `train.py` writes
them, so a restarted learner, `Policy.load`, export and a later offline run read them.

The server tells the learner of each stored episode (a queue of `EpisodeNote`); the learner reads it from its
file. The learner tells the server that it is ready or why it stopped (a status queue).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from visual_lps.config import TrainConfig
from visual_lps.data.episode_files import read_episode
from visual_lps.data.replay import ReplayBuffer
from visual_lps.data.robot_episodes import RobotEpisodeStore
from visual_lps.observations import obs_spec
from visual_lps.runs.checkpoints import latest_checkpoint
from visual_lps.tasks import get_task
from visual_lps.training.trainer import (
    TrainingOutcome,
    TrainingRun,
    build_agent,
    checkpoint,
    errors_as_exit,
    load_task_data,
    log_training,
    make_update,
    open_run_folder,
    restore_checkpoint,
    start_accelerator,
)
from visual_lps.training.trackers import finish_trackers

POLL_SECONDS = 0.02
"""how often an idle learner looks for new episodes (and the server for new weights)"""
LEARNER_NICENESS = 10
"""the learner yields the CPU to the server (and a robot program on the same machine): training never delays a
chunk, it only runs slower when the cores are busy"""
PUBLISH_WAIT = 5.0
"""seconds the learner waits for the weights' lock before it tries again later"""


class SharedWeights:
    """The learner's newest weights in shared memory with their version (the update count that made them); the
    learner writes them, the server copies them out, each holding the lock only for a memory copy. The server
    never blocks on it: a lock it cannot take at once (a copy under way, or a learner killed while holding it)
    is tried again at its next look."""

    def __init__(self, state: dict[str, torch.Tensor], context: Any, version: int):
        self.tensors = {key: value.detach().to("cpu", copy=True).share_memory_() for key, value in state.items()}
        self.version = context.RawValue("q", version)
        self.lock = context.Lock()

    def publish(self, module: torch.nn.Module, version: int) -> bool:
        """Write the weights; False when the lock stayed taken (a server killed mid-copy): tried again later."""
        if not self.lock.acquire(timeout=PUBLISH_WAIT):
            return False
        try:
            with torch.no_grad():
                for key, value in module.state_dict().items():
                    self.tensors[key].copy_(value)
            self.version.value = version
        finally:
            self.lock.release()
        return True

    def take_newer(self, than: int) -> tuple[dict[str, torch.Tensor], int] | None:
        """A copy of the weights and their version, if newer than `than` and the lock is free now."""
        if self.version.value == than or not self.lock.acquire(block=False):
            return None
        try:
            return {key: value.clone() for key, value in self.tensors.items()}, self.version.value
        finally:
            self.lock.release()


class StopFlag:
    """Set by the server, read by the learner: a plain shared byte, so that a learner killed while looking at it
    cannot leave a lock held (a multiprocessing Event can then hang the server's `set`)."""

    def __init__(self, context: Any):
        self.value = context.RawValue("b", 0)

    def set(self) -> None:
        self.value.value = 1

    def is_set(self) -> bool:
        return bool(self.value.value)


@dataclass
class EpisodeNote:
    """What the server tells the learner of a stored episode."""

    path: str
    label: str
    steps: int
    interventions: float
    """fraction of its steps a human was in control"""
    trained_on: bool


@dataclass
class LearnerSettings:
    train_cfg: TrainConfig
    """the fine-tuning run's config (out: its folder; steps: the update count it started from)"""
    agent_cfg: Any
    start_checkpoint: str
    """the checkpoint folder whose weights, Adam state and generators the learner starts from"""
    reward_scheme: str
    publish_every: int
    """updates between weight publications (and at every pause)"""
    threads: int
    """torch threads of the learner"""


@dataclass
class LearnerChannels:
    weights: SharedWeights
    episodes: Any
    """queue of EpisodeNote, server -> learner"""
    status: Any
    """queue of (kind, text), learner -> server: ('ready', description), ('error', message), ('stopped', summary)"""
    stop: StopFlag


def learner_main(settings: LearnerSettings, channels: LearnerChannels) -> None:
    """The learner process: set up, tell the server, train until `stop` (or until the server's process is gone,
    killed without a word); a checkpoint on the way out."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # the server stops us through `stop`, after its clients
        signal.signal(signum, signal.SIG_IGN)
    os.nice(LEARNER_NICENESS)
    torch.set_num_threads(settings.threads)
    try:
        learner = RobotLearner(settings, channels)
    except SystemExit as e:
        channels.status.put(("error", str(e.code).removeprefix("error: ")))
        return
    except Exception as e:  # noqa: BLE001 - whatever fails, the server hears it in one line
        channels.status.put(("error", f"the learner failed to start ({type(e).__name__}: {e})"))
        return
    channels.status.put(("ready", learner.describe()))
    try:
        learner.run()
    except SystemExit as e:
        channels.status.put(("error", str(e.code).removeprefix("error: ")))
        return
    except Exception as e:  # noqa: BLE001
        channels.status.put(("error", f"the learner failed at update {learner.run_state.progress.step} "
                                      f"({type(e).__name__}: {e})"))
        return
    channels.status.put(("stopped", learner.summary()))


class RobotLearner:
    def __init__(self, settings: LearnerSettings, channels: LearnerChannels):
        cfg = settings.train_cfg
        self.settings, self.channels, self.cfg = settings, channels, cfg
        accelerator = start_accelerator(cfg)
        task = get_task(cfg.task)
        task_data, _ = load_task_data(accelerator, task, cfg)
        needs = settings.agent_cfg.data_needs
        spec = obs_spec(task_data.train.observations, needs.frame_stack)
        core, adam = build_agent(accelerator, cfg, settings.agent_cfg, task, task_data, spec)
        try:
            buffer = ReplayBuffer(task_data.train, needs, accelerator.device, cfg.seed * 1000,
                                  core.draw_random_inputs, cfg.data_on, cfg.buffer_capacity, cfg.offline_ratio)
        except ValueError as e:
            raise SystemExit(f"error: {task_data.path}: {e}") from None
        self.offline_rows = buffer.size
        progress = restore_checkpoint(accelerator, Path(settings.start_checkpoint), buffer)
        update = make_update(accelerator, cfg, core, adam, progress)
        open_run_folder(accelerator, cfg, settings.agent_cfg, task_data, spec)
        self.run_state = TrainingRun(accelerator, cfg, core, buffer, update, None, progress,
                                     TrainingOutcome(step=progress.step), tqdm(disable=True),
                                     last_log=(time.time(), progress.step))
        self.single_shape = None if isinstance(buffer.observations, dict) else tuple(buffer.observations.shape[1:])
        self.store = RobotEpisodeStore(Path(cfg.out), settings.reward_scheme)
        progress.env_steps = progress.episodes = 0
        for stored in self.store.trained_on():  # every stored episode, also those after the last checkpoint
            self._add(stored.path, stored.steps)
        self.saved_at = progress.step
        if not latest_checkpoint(Path(cfg.out)):  # the starting point, so that the run folder is a run at once
            checkpoint(self.run_state, progress.step)
        self.task_name, self.data_path = task.describe(cfg), task_data.path

    def describe(self) -> str:
        buffer, progress = self.run_state.sampler, self.run_state.progress
        mix = ("batches uniform over all of it" if buffer.offline_ratio is None
               else f"{buffer.offline_ratio:.0%} of each batch offline")
        return (f"learner: {self.cfg.agent} on {self.task_name} from update {progress.step:,}; replay buffer "
                f"{self.offline_rows:,} offline rows of {self.data_path} + {progress.episodes} robot episodes "
                f"({progress.env_steps:,} steps), {mix}; {self.cfg.utd} update(s) per robot step, "
                f"{self.run_state.update.describe()}")

    def summary(self) -> str:
        progress = self.run_state.progress
        return f"learner stopped at update {progress.step:,} after {progress.episodes} robot episodes trained on"

    @property
    def updates_due(self) -> int:
        """updates owed: `utd` per robot step trained on, counted from the update the fine-tuning started at"""
        progress = self.run_state.progress
        return self.cfg.steps + self.cfg.utd * progress.env_steps - progress.step

    def _add(self, path: str | Path, steps: int) -> None:
        self.run_state.sampler.add_episode(read_episode(Path(path), self.single_shape))
        self.run_state.progress.env_steps += steps
        self.run_state.progress.episodes += 1

    def _receive(self) -> None:
        run = self.run_state
        while True:
            try:
                note: EpisodeNote = self.channels.episodes.get_nowait()
            except queue.Empty:
                return
            if note.trained_on:
                self._add(note.path, note.steps)
            if note.label != "incomplete":
                run.accelerator.log({"robot/success": float(note.label == "success"), "robot/length": note.steps,
                                     "robot/interventions": note.interventions,
                                     "robot/discarded": float(note.label == "discard"),
                                     "robot/episodes": run.progress.episodes}, step=run.progress.step)

    def run(self) -> None:
        run, cfg, weights = self.run_state, self.cfg, self.channels.weights
        published = run.progress.step
        parent = multiprocessing.parent_process()
        with errors_as_exit(run):
            while not self.channels.stop.is_set() and (parent is None or parent.is_alive()):
                self._receive()
                if self.updates_due <= 0:
                    if published != run.progress.step:
                        run.update.check_finite()
                        published = run.progress.step if weights.publish(run.core, run.progress.step) else published
                    time.sleep(POLL_SECONDS)
                    continue
                run.update(run.sampler.sample(cfg.batch_size))
                run.progress.step += 1
                step = run.outcome.step = run.progress.step
                if step % self.settings.publish_every == 0:
                    run.update.check_finite()  # a NaN never reaches the robot: the run stops here instead
                    published = step if weights.publish(run.core, step) else published
                if step % cfg.log_every == 0:
                    log_training(run, step)
                if step % cfg.save_every == 0:
                    checkpoint(run, step)
                    self.saved_at = step
            self._receive()
            if run.progress.step != self.saved_at:
                checkpoint(run, run.progress.step)
        finish_trackers(run.accelerator)
        run.accelerator.end_training()
