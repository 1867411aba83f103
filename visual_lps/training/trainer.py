"""The training loop: data, agent and optimiser prepared by Accelerate, the task's evaluation, logging,
checkpoints that hold everything needed to resume (flags: `visual_lps.training.flags`; checkpoint files:
`visual_lps.training.checkpointing`; the update itself: `visual_lps.training.update`; what each task loads and
how it is evaluated: `visual_lps.tasks`).

Single process (`python train.py`) and `accelerate launch train.py` run the same code. Each process draws
its own batches (`--batch-size` is per process) from its own seeded sampler; evaluation, logging and
checkpoint files are the main process's job.

`train` runs its phases in order: runtime, lock, data, agent and optimiser, restore, run folder, loop; the loop is
the offline updates, then, with --online-steps, the online phase (`visual_lps.training.online`: acting in the task's
simulator, its steps added to the replay buffer the sampler became).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from tqdm import tqdm

from visual_lps.agents import AGENTS
from visual_lps.files import write_text_atomic, write_video_atomic
from visual_lps.config import TrainConfig, save_run_config
from visual_lps.data.chunks import ChunkSampler, DataNeeds
from visual_lps.data.replay import ReplayBuffer
from visual_lps.data.node_share import NodeShare
from visual_lps.data.robot_hdf5 import DatasetFormatError
from visual_lps.observations import ObsSpec, obs_spec, spec_to_yaml
from visual_lps.runs.checkpoints import CheckpointError, latest_checkpoint, latest_complete_checkpoint
from visual_lps.runs.folder import RunFolder, check_writable, clear_run_folder
from visual_lps.runs.lock import RunLock, RunLockError
from visual_lps.tasks import Evaluator, Task, TaskData, get_task
from visual_lps.training.checkpointing import (
    CheckpointWriteError,
    check_data_only,
    check_ranks_in_sync,
    checkpoint_bytes,
    load_counters,
    load_training_state,
    save_checkpoint,
    space_warning,
)
from visual_lps.training.online import run_online, start_online
from visual_lps.training.signals import StopRequest
from visual_lps.training.trackers import finish_trackers, log_video, start_trackers
from visual_lps.training.trackers import flush as flush_trackers
from visual_lps.training.update import UpdateStep


@dataclass
class TrainingProgress:
    """The counters checkpointed with the run (in its training state, `visual_lps.runs.checkpoints`)."""

    step: int = 0
    """updates so far, offline and online"""
    env_steps: int = 0
    """online environment steps so far"""
    episodes: int = 0
    """online episodes finished (and written to online/)"""

    ONLINE_COUNTERS = ("env_steps", "episodes")

    def online_counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.ONLINE_COUNTERS}


@dataclass
class TrainingOutcome:
    step: int
    """the last step trained"""
    metrics: dict[str, float] = field(default_factory=dict)
    """the last evaluation's (or offline validation's) metrics, on the main process"""
    stopped_by: str | None = None
    """the signal that stopped the run early (after a checkpoint), if any"""


CPU_COMPILE_MIN_STEPS = 20_000
"""on a CPU the update is compiled by default for runs with at least this many steps to go: compiling takes
about a minute (seconds from inductor's on-disk cache) and saves about 10 ms a step (bench/README.md), so a run
of a few thousand steps repays it; below this a short or test run starts at once"""


def compiles_update(train_cfg: TrainConfig, device: torch.device, steps_to_go: int) -> bool:
    """--compile / --no-compile as given; by default the update is compiled (as CUDA graphs) on CUDA, and on a
    CPU for a run long enough to repay the compile time."""
    if train_cfg.compile is not None:
        return train_cfg.compile
    return device.type == "cuda" or steps_to_go >= CPU_COMPILE_MIN_STEPS


def is_out_of_memory(error: RuntimeError) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's plain RuntimeError (a batch too large for the host)."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def start_accelerator(train_cfg: TrainConfig) -> Accelerator:
    """Accelerate joined into one process group per launch, with the precision settings of the flags."""
    accelerator = Accelerator(mixed_precision=train_cfg.mixed_precision)
    if accelerator.mixed_precision == "fp16":
        raise SystemExit("error: mixed precision fp16 is not supported (it needs loss scaling): use bf16 "
                         "(--mixed-precision bf16, or in the Accelerate config)")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise SystemExit(
            f"error: launched as {launched} processes, but Accelerate joined them into no process group (a config "
            f"with use_cpu: true or --cpu does this); on CPUs use: ACCELERATE_USE_CPU=1 accelerate launch "
            f"--multi_gpu --num_processes {launched} train.py ..."
        )
    if accelerator.device.type == "cuda":
        torch.set_float32_matmul_precision("high" if train_cfg.tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = train_cfg.tf32
    return accelerator


@contextmanager
def locked_run_folder(accelerator: Accelerator, out: str) -> Iterator[None]:
    """The main process holds the run folder's lock throughout: a second run on the same --out is refused
    before it loads data or clears anything."""
    if not accelerator.is_main_process:
        yield
        return
    try:
        lock = RunLock.acquire(out)
    except RunLockError as e:
        raise SystemExit(f"error: --out {e}") from None
    try:
        if lock.taken_over:
            accelerator.print(f"warning: {lock.taken_over}")
        check_writable(lock.folder)
        yield
    finally:
        lock.release()


def load_task_data(accelerator: Accelerator, task: Task, train_cfg: TrainConfig) -> tuple[TaskData, str]:
    """The task's data and how this node shares it: the node's first process loads first; the others map the
    observations it shared (NodeShare)."""
    try:
        share = NodeShare(f"{os.getppid()}", accelerator.local_process_index,
                          int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        with accelerator.local_main_process_first():
            task_data = task.load(train_cfg, accelerator.is_main_process, share)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    accelerator.wait_for_everyone()
    share.release()
    return task_data, share.describe()


def build_agent(
    accelerator: Accelerator, train_cfg: TrainConfig, agent_cfg: Any, task: Task, task_data: TaskData, spec: ObsSpec
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The agent, identical on every process, prepared for the task, and its Adam, both prepared by Accelerate."""
    torch.manual_seed(train_cfg.seed)  # identical initial weights on every process
    try:
        agent = AGENTS[train_cfg.agent].agent(agent_cfg, spec, int(task_data.train.actions.shape[1]))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    task.prepare_agent(agent, task_data)
    if train_cfg.channels_last:
        agent.to(memory_format=torch.channels_last)  # convolution weights; their activations follow suit
    params = [p for p in agent.parameters() if p.requires_grad]
    # Adam's state lives in this optimiser (checkpointed by Accelerate); the update applies it (UpdateStep).
    # `fused` keeps its step counts on the device when a checkpoint is loaded.
    adam = torch.optim.Adam(params, lr=agent_cfg.lr, fused=accelerator.device.type in ("cpu", "cuda"))
    # No DDP wrapper: UpdateStep averages the gradients itself, inside the one compiled graph.
    core = accelerator.prepare_model(agent, evaluation_mode=True)
    accelerator.prepare_optimizer(adam)
    return core, adam


def make_sampler(accelerator: Accelerator, train_cfg: TrainConfig, core: torch.nn.Module, task_data: TaskData,
                 needs: DataNeeds) -> ChunkSampler:
    """This process's training batches, from its own seed, with the agent's random inputs of each update; with an
    online phase, from the replay buffer that starts as the offline data."""
    seed = train_cfg.seed * 1000 + accelerator.process_index
    try:
        if train_cfg.online_steps:
            return ReplayBuffer(task_data.train, needs, accelerator.device, seed, core.draw_random_inputs,
                                train_cfg.data_on, train_cfg.buffer_capacity, train_cfg.offline_ratio)
        return ChunkSampler(task_data.train, needs, accelerator.device, seed=seed,
                            draw_random=core.draw_random_inputs, placement=train_cfg.data_on)
    except ValueError as e:
        raise SystemExit(f"error: {task_data.path}: training demos: {e}") from None


def make_evaluator(accelerator: Accelerator, train_cfg: TrainConfig, task: Task, task_data: TaskData,
                   needs: DataNeeds) -> Evaluator | None:
    """The task's evaluator, built once, on the main process (which alone evaluates)."""
    if not accelerator.is_main_process:
        return None
    try:
        return task.make_evaluator(train_cfg, task_data, needs, accelerator.device)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def restore(accelerator: Accelerator, run_dir: Path, sampler: ChunkSampler) -> TrainingProgress:
    """--resume: weights, Adam, the samplers' generators and the step of the latest complete checkpoint."""
    ckpt, skipped = latest_complete_checkpoint(run_dir)
    for reason in skipped:
        accelerator.print(f"warning: {reason}; resuming from an earlier one")
    if ckpt is None:
        found = f"only incomplete ones ({len(skipped)})" if skipped else "no checkpoint"
        raise SystemExit(f"error: --resume: {run_dir / 'checkpoints'} holds {found}")
    return restore_checkpoint(accelerator, ckpt, sampler)


def restore_checkpoint(accelerator: Accelerator, ckpt: Path, sampler: ChunkSampler) -> TrainingProgress:
    """Weights, Adam, the samplers' generators and the counters of the checkpoint folder `ckpt`."""
    progress = TrainingProgress()
    try:
        check_data_only(ckpt)  # before Accelerate unpickles anything of it
        progress.step, generators = load_training_state(ckpt)
        for name, value in load_counters(ckpt, TrainingProgress.ONLINE_COUNTERS).items():
            setattr(progress, name, value)
        accelerator.load_state(str(ckpt))
    except CheckpointError as e:
        raise SystemExit(f"error: --resume: {e}") from None
    except Exception as e:  # a damaged checkpoint written before manifests
        raise SystemExit(f"error: --resume: cannot load checkpoint {ckpt} ({type(e).__name__}: {e})") from None
    sampler.load_state_dict({"generators": generators})
    accelerator.print(f"resumed from {ckpt} at step {progress.step}")
    return progress


def make_update(accelerator: Accelerator, train_cfg: TrainConfig, core: torch.nn.Module, adam: torch.optim.Optimizer,
                progress: TrainingProgress) -> UpdateStep:
    """The whole update as one step, compiled or not (built after a restore, which replaces Adam's state)."""
    first_step = progress.step
    online_updates = max(train_cfg.online_steps - max(progress.env_steps, train_cfg.warmup_steps), 0) * train_cfg.utd
    compiled = compiles_update(train_cfg, accelerator.device, max(train_cfg.steps - first_step, 0) + online_updates)
    core.compile_act_on_cuda = compiled  # evaluation's `act` follows --compile / --no-compile
    return UpdateStep(core, adam, compile=compiled, backend=train_cfg.compile_backend,
                      mixed_precision=accelerator.mixed_precision, first_step=first_step)


def open_run_folder(accelerator: Accelerator, train_cfg: TrainConfig, agent_cfg: Any, task_data: TaskData,
                    spec: ObsSpec) -> None:
    """The main process (re)writes the run's config and agent spec and starts its trackers."""
    if not accelerator.is_main_process:
        return
    folder = RunFolder(Path(train_cfg.out))
    if train_cfg.overwrite:
        clear_run_folder(folder.root)
    save_run_config(folder.config, train_cfg, agent_cfg)
    agent_spec = {"obs_spec": spec_to_yaml(spec), "action_dim": int(task_data.train.actions.shape[1]),
                  "dataset": str(task_data.path), "sparse": task_data.sparse}
    write_text_atomic(folder.spec, yaml.safe_dump(agent_spec, sort_keys=False))
    start_trackers(accelerator, train_cfg, agent_cfg)


@dataclass
class TrainingRun:
    """Everything the loop reads and advances, built by the phases of `train`."""

    accelerator: Accelerator
    train_cfg: TrainConfig
    core: torch.nn.Module
    """the agent, prepared by Accelerate"""
    sampler: ChunkSampler
    update: UpdateStep
    evaluator: Evaluator | None
    """the task's, on the main process"""
    progress: TrainingProgress
    outcome: TrainingOutcome
    bar: tqdm
    last_log: tuple[float, int]
    """(time, step) of the last training log, for the steps per second"""

    @property
    def run_dir(self) -> Path:
        return Path(self.train_cfg.out)


def announce(run: TrainingRun, task: Task, task_data: TaskData, share_note: str) -> None:
    """What trains on what, where the data live, whether the checkpoints fit, how the update runs."""
    accelerator, cfg = run.accelerator, run.train_cfg
    accelerator.print(
        f"training {cfg.agent} on {task.describe(cfg)} "
        f"({len(run.sampler)} chunks from {task_data.train.num_episodes} episodes of {task_data.path}) -> {run.run_dir}"
    )
    accelerator.print(f"data: {run.sampler.placement_reason}{share_note}")
    warning = space_warning(run.run_dir, checkpoint_bytes(run.core), run.progress.step, cfg.steps, cfg.save_every,
                            cfg.keep_last)
    if warning:
        accelerator.print(warning)
    tf32 = accelerator.device.type == "cuda" and cfg.tf32
    accelerator.print(f"update: {run.update.describe()}" + (", TF32 matmuls" if tf32 else ""))


def due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def log_training(run: TrainingRun, step: int) -> None:
    """The update's metrics, means since the last log over all processes (raises on NaN/inf)."""
    values = run.update.metrics()
    if not run.accelerator.is_main_process:
        return
    now, (then, then_step) = time.time(), run.last_log
    values["perf/steps_per_second"] = (step - then_step) / max(now - then, 1e-9)
    run.last_log = (now, step)
    run.accelerator.log(values, step=step)
    run.bar.set_postfix({name: f"{values[name]:.3g}" for name in run.core.progress_metrics})


def evaluate(run: TrainingRun, step: int) -> dict[str, float]:
    """The task's evaluation of the agent (main process), logged; no metrics where the task has no evaluator."""
    metrics = {}
    if run.evaluator is not None:
        run.core.eval()
        metrics = run.evaluator.evaluate(run.core)
        run.core.train()
        tqdm.write(f"step {step}: {run.evaluator.describe(metrics)}")
        frames = getattr(run.evaluator, "video_frames", None)
        if frames:
            path = RunFolder(run.run_dir).videos / f"step_{step:08d}.mp4"
            path.parent.mkdir(exist_ok=True)
            write_video_atomic(path, frames, run.evaluator.video_fps)
            log_video(run.accelerator, path, step)
    run.accelerator.log(metrics, step=step)
    flush_trackers(run.accelerator)
    return metrics


def checkpoint(run: TrainingRun, step: int) -> None:
    """Only weights known to be finite and in sync across processes are saved."""
    run.update.check_finite()
    start = time.time()
    check_ranks_in_sync(run.accelerator, run.core)
    generators = run.sampler.state_dict()["generators"]  # every process's: all of them gather them
    saved = save_checkpoint(run.accelerator, run.run_dir, step, run.train_cfg.keep_last, generators,
                            run.progress.online_counters())
    run.accelerator.log({"perf/checkpoint_seconds": time.time() - start}, step=step)
    processes = run.accelerator.num_processes
    if processes > 1:
        run.accelerator.print(f"checkpoint {saved.name}: weights identical on all {processes} processes")


@contextmanager
def errors_as_exit(run: TrainingRun) -> Iterator[None]:
    """A NaN, a damaged frame, a failed checkpoint write or too large a batch stop the run in one line."""
    try:
        yield
    except (FloatingPointError, DatasetFormatError) as e:  # a NaN; a damaged frame read while training
        last = latest_checkpoint(run.run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
        raise SystemExit(f"error: {e}; the run stops here, {kept}") from None
    except CheckpointWriteError as e:
        raise SystemExit(f"error: {e}") from None
    except RuntimeError as e:
        if not is_out_of_memory(e):
            raise
        first_line = str(e).strip().splitlines()[0]
        raise SystemExit(f"error: out of memory at step {run.progress.step + 1} with --batch-size "
                         f"{run.train_cfg.batch_size} per process ({first_line}); give a smaller --batch-size") from None


def run_loop(run: TrainingRun, stop: StopRequest) -> TrainingOutcome:
    """Update, log, evaluate and checkpoint until --steps, or until a stop signal (checkpoint, then return)."""
    cfg, outcome = run.train_cfg, run.outcome
    try:
        with errors_as_exit(run):
            while run.progress.step < cfg.steps and run.progress.env_steps == 0:
                run.update(run.sampler.sample(cfg.batch_size))
                run.progress.step += 1
                step = outcome.step = run.progress.step
                run.bar.update()
                if due(step, cfg.log_every, cfg.steps):
                    log_training(run, step)
                if run.accelerator.is_main_process and due(step, cfg.eval_every, cfg.steps):
                    outcome.metrics = evaluate(run, step)
                stopping = stop.should_stop(step)
                if stopping or due(step, cfg.save_every, cfg.steps):
                    checkpoint(run, step)
                if stopping:
                    outcome.stopped_by = stop.signal_name or "a signal to another process"
                    break
    finally:
        run.bar.close()
    return outcome


def run_phases(run: TrainingRun, task: Task, task_data: TaskData) -> TrainingOutcome:
    """The offline phase, then the online one where --online-steps asks for it (not after a stop signal)."""
    stop = StopRequest()
    try:
        outcome = run_loop(run, stop)
        if run.train_cfg.online_steps and not outcome.stopped_by:
            phase = start_online(run, task, task_data)
            with errors_as_exit(run):
                run_online(run, phase, stop, evaluate, log_training, checkpoint)
    finally:
        stop.restore()
        finish_trackers(run.accelerator)
    return run.outcome


def train(train_cfg: TrainConfig, agent_cfg: Any) -> TrainingOutcome:
    """Train, evaluate and checkpoint until `steps`, a stop signal (checkpoint, then return) or a non-finite
    value (SystemExit naming it; the last good checkpoint stays). The main process holds the run folder's lock
    throughout: a second run on the same --out is refused before it loads data or clears anything."""
    accelerator = start_accelerator(train_cfg)
    if train_cfg.online_steps and accelerator.num_processes > 1:
        raise SystemExit(f"error: --online-steps: the online phase acts in one simulator, in one process; "
                         f"{accelerator.num_processes} were launched (run it with python train.py)")
    with locked_run_folder(accelerator, train_cfg.out):
        task = get_task(train_cfg.task)
        task_data, share_note = load_task_data(accelerator, task, train_cfg)
        needs = agent_cfg.data_needs  # what the agent reads: chunk horizon, stacked frames
        spec = obs_spec(task_data.train.observations, needs.frame_stack)
        core, adam = build_agent(accelerator, train_cfg, agent_cfg, task, task_data, spec)
        sampler = make_sampler(accelerator, train_cfg, core, task_data, needs)
        evaluator = make_evaluator(accelerator, train_cfg, task, task_data, needs)
        progress = restore(accelerator, Path(train_cfg.out), sampler) if train_cfg.resume else TrainingProgress()
        update = make_update(accelerator, train_cfg, core, adam, progress)
        open_run_folder(accelerator, train_cfg, agent_cfg, task_data, spec)
        bar = tqdm(total=train_cfg.steps, initial=progress.step, desc="training", unit="step", dynamic_ncols=True,
                   disable=not (accelerator.is_main_process and train_cfg.progress))
        run = TrainingRun(accelerator, train_cfg, core, sampler, update, evaluator, progress,
                          TrainingOutcome(step=progress.step), bar, last_log=(time.time(), progress.step))
        announce(run, task, task_data, share_note)
        outcome = run_phases(run, task, task_data)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    return outcome
