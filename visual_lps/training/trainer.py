"""The training loop: data, agent and optimiser prepared by Accelerate, periodic evaluation, logging,
checkpoints that hold everything needed to resume (flags: `visual_lps.training.flags`; checkpoint files:
`visual_lps.training.checkpointing`; the update itself: `visual_lps.training.update`).

Single process (`python train.py`) and `accelerate launch train.py` run the same code. Each process draws
its own batches (`--batch-size` is per process) from its own seeded sampler; evaluation, logging and
checkpoint files are the main process's job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm import tqdm

from visual_lps.agents import AGENTS
from visual_lps.runs.checkpoints import CheckpointError, latest_checkpoint, latest_complete_checkpoint
from visual_lps.training.checkpointing import (
    CheckpointWriteError,
    check_data_only,
    check_ranks_in_sync,
    checkpoint_bytes,
    load_training_state,
    save_checkpoint,
    space_warning,
)
from visual_lps.config import TrainConfig, save_run_config
from visual_lps.runs.folder import RunFolder, check_writable, clear_run_folder
from visual_lps.data.chunks import ChunkSampler, OfflineData, RandomInputs
from visual_lps.data.node_share import NodeShare
from visual_lps.data.robot_hdf5 import DatasetFormatError
from visual_lps.training.signals import StopRequest
from visual_lps.observations import obs_spec, spec_to_yaml
from visual_lps.deploy.policy import Policy
from visual_lps.runs.lock import RunLock, RunLockError
from visual_lps.tasks import get_task
from visual_lps.training.update import UpdateStep

VALIDATION_BATCHES = 4
"""batches of held-out demos averaged for the offline metrics of robot runs"""


@dataclass
class TrainingProgress:
    """The step counter, checkpointed with the run (in its training state, `visual_lps.runs.checkpoints`)."""

    step: int = 0


def compile_update(train_cfg: TrainConfig, device: torch.device) -> bool:
    """--compile / --no-compile as given; by default the update is compiled (as CUDA graphs) on CUDA only:
    on a CPU the compilation costs more time than a short run saves."""
    return device.type == "cuda" if train_cfg.compile is None else train_cfg.compile


@dataclass
class TrainingOutcome:
    step: int
    """the last step trained"""
    metrics: dict[str, float] = field(default_factory=dict)
    """the last evaluation's (or offline validation's) metrics, on the main process"""
    stopped_by: str | None = None
    """the signal that stopped the run early (after a checkpoint), if any"""


def is_out_of_memory(error: RuntimeError) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's plain RuntimeError (a batch too large for the host)."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def train(train_cfg: TrainConfig, agent_cfg: Any) -> TrainingOutcome:
    """Train, evaluate and checkpoint until `steps`, a stop signal (checkpoint, then return) or a non-finite
    value (SystemExit naming it; the last good checkpoint stays). The main process holds the run folder's lock
    throughout: a second run on the same --out is refused before it loads data or clears anything."""
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
    lock = None
    if accelerator.is_main_process:
        try:
            lock = RunLock.acquire(train_cfg.out)
        except RunLockError as e:
            raise SystemExit(f"error: --out {e}") from None
    try:
        if lock is not None:
            if lock.taken_over:
                accelerator.print(f"warning: {lock.taken_over}")
            check_writable(lock.folder)
        return _train(accelerator, train_cfg, agent_cfg)
    finally:
        if lock is not None:
            lock.release()


def _train(accelerator: Accelerator, train_cfg: TrainConfig, agent_cfg: Any) -> TrainingOutcome:
    """The run itself, its folder locked by the main process."""
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(train_cfg.out)
    task = get_task(train_cfg.task)
    try:
        # The node's first process loads first; the others map the observations it shared (NodeShare).
        share = NodeShare(f"{os.getppid()}", accelerator.local_process_index,
                          int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        with accelerator.local_main_process_first():
            task_data = task.load(train_cfg, accelerator.is_main_process, share)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    accelerator.wait_for_everyone()
    share.release()
    data, valid_data, path = task_data.train, task_data.valid, task_data.path

    torch.manual_seed(train_cfg.seed)  # identical initial weights on every process
    needs = agent_cfg.data_needs  # what the agent reads: chunk horizon, stacked frames
    spec, action_dim = obs_spec(data.observations, needs.frame_stack), int(data.actions.shape[1])
    agent_cls = AGENTS[train_cfg.agent][1]
    try:
        agent = agent_cls(agent_cfg, spec, action_dim)
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
    def make_sampler(split: OfflineData, seed: int, what: str, random_inputs: RandomInputs | None) -> ChunkSampler:
        try:
            return ChunkSampler(split, needs, accelerator.device, seed=seed, draw_random=random_inputs,
                                placement=train_cfg.data_on)
        except ValueError as e:
            raise SystemExit(f"error: {path}: {what}: {e}") from None

    sampler = make_sampler(data, train_cfg.seed * 1000 + accelerator.process_index, "training demos",
                           core.draw_random_inputs)
    valid_sampler = None  # offline metrics of robot runs, main process only; fixed batches (reseeded each time)
    if valid_data is not None and accelerator.is_main_process:
        valid_sampler = make_sampler(valid_data, train_cfg.seed, "held-out (mask/valid) demos", None)
    progress = TrainingProgress()

    if train_cfg.resume:
        ckpt, skipped = latest_complete_checkpoint(run_dir)
        for reason in skipped:
            accelerator.print(f"warning: {reason}; resuming from an earlier one")
        if ckpt is None:
            found = f"only incomplete ones ({len(skipped)})" if skipped else "no checkpoint"
            raise SystemExit(f"error: --resume: {run_dir / 'checkpoints'} holds {found}")
        try:
            check_data_only(ckpt)  # before Accelerate unpickles anything of it
            progress.step, generators = load_training_state(ckpt)
            accelerator.load_state(str(ckpt))
        except CheckpointError as e:
            raise SystemExit(f"error: --resume: {e}") from None
        except Exception as e:  # a damaged checkpoint written before manifests
            raise SystemExit(f"error: --resume: cannot load checkpoint {ckpt} ({type(e).__name__}: {e})") from None
        sampler.load_state_dict({"generators": generators})
        accelerator.print(f"resumed from {ckpt} at step {progress.step}")

    writer = None
    eval_env = None
    if accelerator.is_main_process:
        if train_cfg.overwrite:
            clear_run_folder(run_dir)
        save_run_config(RunFolder(run_dir).config, train_cfg, agent_cfg)
        agent_spec = {"obs_spec": spec_to_yaml(spec), "action_dim": action_dim, "dataset": str(path),
                      "sparse": task_data.sparse}
        RunFolder(run_dir).spec.write_text(yaml.safe_dump(agent_spec, sort_keys=False))
        writer = SummaryWriter(str(RunFolder(run_dir).logs))
        eval_env = task.make_evaluator(train_cfg)
        accelerator.print(
            f"training {train_cfg.agent} on {task.describe(train_cfg)} "
            f"({len(sampler)} chunks from {data.num_episodes} episodes of {path}) -> {run_dir}"
        )
        accelerator.print(f"data: {sampler.placement_reason}{share.describe()}")
        warning = space_warning(run_dir, checkpoint_bytes(core), progress.step, train_cfg.steps,
                                train_cfg.save_every, train_cfg.keep_last)
        if warning:
            accelerator.print(warning)

    def run_validation(step: int) -> dict[str, float]:
        """Offline metrics on the held-out demos: the same batches every time (fixed seed)."""
        core.eval()
        valid_sampler.generator.manual_seed(train_cfg.seed)
        totals: dict[str, float] = {}
        for _ in range(VALIDATION_BATCHES):
            for k, v in core.validation_metrics(valid_sampler.sample(train_cfg.batch_size)).items():
                totals[k] = totals.get(k, 0.0) + v.item() / VALIDATION_BATCHES
        core.train()
        tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in totals.items()))
        return totals

    def run_eval(step: int) -> dict[str, float]:
        from visual_lps.envs.ogbench_env import evaluate  # the simulator, for tasks that have one

        core.eval()
        result = evaluate(
            Policy(core, accelerator.device), eval_env, train_cfg.eval_episodes,
            seed=train_cfg.seed * 100_000, progress=train_cfg.progress,
        )
        core.train()
        tqdm.write(f"step {step}: success rate {result.success_rate:.2%} over {train_cfg.eval_episodes} episodes")
        return {"eval/success_rate": result.success_rate, "eval/return": result.mean_return}

    def checkpoint(step: int) -> None:
        """Only weights known to be finite and in sync across processes are saved."""
        update.check_finite()
        start = time.time()
        check_ranks_in_sync(accelerator, core)
        generators = sampler.state_dict()["generators"]  # every process's: all of them gather them
        saved = save_checkpoint(accelerator, run_dir, step, train_cfg.keep_last, generators)
        if writer is not None:
            writer.add_scalar("perf/checkpoint_seconds", time.time() - start, step)
        if accelerator.num_processes > 1:
            accelerator.print(f"checkpoint {saved.name}: weights identical on all {accelerator.num_processes} processes")

    outcome = TrainingOutcome(step=progress.step)
    compiled = compile_update(train_cfg, accelerator.device)
    core.compile_act_on_cuda = compiled  # evaluation's `act` follows --compile / --no-compile
    update = UpdateStep(core, adam, compile=compiled, backend=train_cfg.compile_backend,
                        mixed_precision=accelerator.mixed_precision, first_step=progress.step)
    tf32 = accelerator.device.type == "cuda" and train_cfg.tf32
    accelerator.print(f"update: {update.describe()}" + (", TF32 matmuls" if tf32 else ""))
    stop = StopRequest()
    bar = tqdm(
        total=train_cfg.steps, initial=progress.step, desc="training", unit="step",
        disable=not (accelerator.is_main_process and train_cfg.progress), dynamic_ncols=True,
    )
    tick, tick_step = time.time(), progress.step
    try:
        while progress.step < train_cfg.steps:
            update(sampler.sample(train_cfg.batch_size))
            progress.step += 1
            step = outcome.step = progress.step
            bar.update()

            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                values = update.metrics()  # means since the last log, over all processes; raises on NaN/inf
                if writer is not None:
                    now = time.time()
                    values["perf/steps_per_second"] = (step - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, step
                    for k, v in values.items():
                        writer.add_scalar(k, v, step)
                    bar.set_postfix({name: f"{values[name]:.3g}" for name in agent.progress_metrics})
            if accelerator.is_main_process and (step % train_cfg.eval_every == 0 or step == train_cfg.steps):
                evaluation = {}
                if eval_env is not None:
                    evaluation = run_eval(step)
                elif valid_sampler is not None:
                    evaluation = run_validation(step)
                for k, v in evaluation.items():
                    writer.add_scalar(k, v, step)
                writer.flush()
                outcome.metrics = evaluation
            stopping = stop.should_stop(step)
            if stopping or step % train_cfg.save_every == 0 or step == train_cfg.steps:
                checkpoint(step)
            if stopping:
                outcome.stopped_by = stop.signal_name or "a signal to another process"
                break
    except (FloatingPointError, DatasetFormatError) as e:  # a NaN; a damaged frame read while training
        last = latest_checkpoint(run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
        raise SystemExit(f"error: {e}; the run stops here, {kept}") from None
    except CheckpointWriteError as e:
        raise SystemExit(f"error: {e}") from None
    except RuntimeError as e:
        if not is_out_of_memory(e):
            raise
        first_line = str(e).strip().splitlines()[0]
        raise SystemExit(f"error: out of memory at step {progress.step + 1} with --batch-size {train_cfg.batch_size} "
                         f"per process ({first_line}); give a smaller --batch-size") from None
    finally:
        stop.restore()
        bar.close()
        if writer is not None:
            writer.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return outcome
