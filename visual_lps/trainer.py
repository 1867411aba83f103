"""The training loop: data, agent and optimiser prepared by Accelerate, periodic evaluation, logging,
checkpoints that hold everything needed to resume.

Single process (`python train.py`) and `accelerate launch train.py` run the same code. Each process draws
its own batches (`--batch-size` is per process) from its own seeded sampler; evaluation, logging and
checkpoint files are the main process's job.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from visual_lps.agents import AGENTS
from visual_lps.checkpoint import (
    CHECKPOINT_PREFIX,
    latest_checkpoint,
    latest_complete_checkpoint,
    rotate_checkpoints,
    weights_digest,
    write_manifest,
)
from visual_lps.config import (
    TrainConfig,
    add_dataclass_flags,
    as_flag_value,
    check_ranges,
    coerce,
    load_yaml,
    save_run_config,
)
from visual_lps.data.chunks import ChunkSampler, OfflineData, RandomInputs
from visual_lps.data.node_share import NodeShare
from visual_lps.data.ogbench_data import find_dataset, load_ogbench_task_data
from visual_lps.data.robot_data import load_robot_data, state_statistics
from visual_lps.data.robot_hdf5 import validate_hdf5
from visual_lps.faults import StopRequest
from visual_lps.observations import Nested, map_obs, obs_spec, spec_to_yaml
from visual_lps.tasks import OGBenchTask, RobotTask, Task, get_task
from visual_lps.update import UpdateStep

VALIDATION_BATCHES = 4
"""batches of held-out demos averaged for the offline metrics of robot runs"""


def default_out(train: TrainConfig) -> str:
    if train.task == "robot" and train.dataset:
        return f"runs/robot-{Path(train.dataset).stem}-{train.agent}-s{train.seed}"
    return f"runs/{train.task}-task{train.task_id}-{train.agent}-s{train.seed}"


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Any]:
    """Defaults < configs/<family>.yaml (or the saved config of a resumed run) < flags given."""
    parser = argparse.ArgumentParser(description="Train an agent (LPS by default) on an OGBench task.")
    flags = add_dataclass_flags(parser, TrainConfig, "training")
    for cfg_cls in dict.fromkeys(cfg for cfg, _ in AGENTS.values()):
        flags |= add_dataclass_flags(parser, cfg_cls, f"agent ({cfg_cls.__name__})", skip=flags)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    train_names = {f.name for f in fields(TrainConfig)}
    train_given = {k: v for k, v in given.items() if k in train_names}
    agent_given = {k: v for k, v in given.items() if k not in train_names}

    try:
        return _resolve(train_given, agent_given)
    except ValueError as e:  # an unknown task, a config file that names unknown fields
        raise SystemExit(f"error: {e}") from None


def _resolve(train_given: dict[str, Any], agent_given: dict[str, Any]) -> tuple[TrainConfig, Any]:
    if train_given.get("resume"):
        probe = TrainConfig(**train_given)
        out = Path(probe.out or default_out(probe))
        saved = out / "config.yaml"
        if not saved.exists():
            raise SystemExit(f"error: --resume: no run to resume at {out} ({saved} is missing)")
        base = load_yaml(saved)
        base["train"]["out"] = str(out)
        base["train"]["overwrite"] = False  # what started the run, not what continues it
        refuse_changes_on_resume(saved, base, train_given, agent_given)
    else:
        task = get_task(train_given.get("task", TrainConfig.task))
        base = load_yaml(task.config_path)
    train = TrainConfig(**(coerce(TrainConfig, base["train"], "config") | train_given))
    get_task(train.task)
    check_ranges(train)
    if train.agent not in AGENTS:
        raise SystemExit(f"error: unknown --agent {train.agent!r}; available: {', '.join(AGENTS)}")
    agent_cls = AGENTS[train.agent][0]
    foreign = sorted(k for k in agent_given if k not in {f.name for f in fields(agent_cls)})
    if foreign:
        raise SystemExit(f"error: flag(s) {foreign} do not apply to agent {train.agent!r}")
    agent = agent_cls(**(coerce(agent_cls, base["agent"], "config") | agent_given))
    check_ranges(agent)
    if train.out is None:
        train.out = default_out(train)
    check_run_folder(Path(train.out), train.resume, train.overwrite)
    return train, agent


RESUMABLE_CHANGES = frozenset({
    "steps", "eval_every", "eval_episodes", "log_every", "save_every", "keep_last", "progress", "out", "resume",
    "overwrite", "dataset_dir", "data_cache", "data_on", "compile", "compile_backend", "mixed_precision",
    "channels_last",
})
"""fields a resumed run may change: how long and how it runs, what it logs and keeps, where the data are.
Everything else (task, data, seed, batch, every agent field) defines what is learned and stays as it was;
precision and compilation may change, at the cost of bit-exactness with an uninterrupted run"""


def refuse_changes_on_resume(saved: Path, base: dict, train_given: dict[str, Any], agent_given: dict[str, Any]) -> None:
    """SystemExit naming every flag of a --resume that would change what the run learns, with both values."""
    agent_cls = AGENTS[base["train"].get("agent", TrainConfig.agent)][0]
    before = coerce(TrainConfig, {k: v for k, v in base["train"].items() if k in train_given}, str(saved))
    before |= coerce(agent_cls, {k: v for k, v in base["agent"].items() if k in agent_given}, str(saved))
    defaults = {f.name: f.default for cls in (TrainConfig, agent_cls) for f in fields(cls)}
    changed = [(name, before.get(name, defaults.get(name)), value) for name, value in (train_given | agent_given).items()
               if name not in RESUMABLE_CHANGES and before.get(name, defaults.get(name)) != value]
    if changed:
        described = "; ".join(f"--{name.replace('_', '-')} {as_flag_value(new)} (the run has {as_flag_value(old)})"
                              for name, old, new in changed)
        raise SystemExit(f"error: --resume continues the run in {saved.parent} as it was configured: {described}. "
                         f"Start a new run (another --out, or --overwrite) to change them")


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Before anything is loaded: --out must be a folder, and one that holds a run only when that run is
    continued (--resume) or explicitly replaced (--overwrite)."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a run folder")
    if resume and overwrite:
        raise SystemExit("error: --resume continues the run in --out and --overwrite replaces it: give one")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not resume and not overwrite:
        raise SystemExit(f"error: --out {out} already holds a run ({', '.join(held)}); continue it with --resume, "
                         f"or replace it with --overwrite (deletes its checkpoints, logs and config)")


RUN_FILES = ("config.yaml", "agent_spec.yaml", "checkpoints", "tb")
"""what a run folder holds (and --overwrite deletes); anything else in the folder is left alone"""


def clear_run_folder(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@dataclass
class TrainingProgress:
    """The step counter, checkpointed with the run."""

    step: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (its partial folder is removed, earlier checkpoints are kept)."""


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep_last: int) -> Path:
    """Accelerate's save_state into a temporary folder, then the config and a manifest of every file's size
    and digest (written last), then a rename: a killed write leaves the previous checkpoints as they were, and
    a file damaged later is caught when the checkpoint is loaded. Older checkpoints beyond `keep_last` are then
    deleted."""
    final = run_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.copy(run_dir / "config.yaml", tmp / "config.yaml")
            shutil.copy(run_dir / "agent_spec.yaml", tmp / "agent_spec.yaml")
            write_manifest(tmp)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError from its zip writer
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(run_dir).free
        if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or free < 1 << 20:
            raise CheckpointWriteError(f"no space left on device at {run_dir} ({free:,} bytes free): checkpoint "
                                       f"{final.name} was not written; the earlier checkpoints are kept") from e
        raise CheckpointWriteError(f"could not write checkpoint {final} ({e}); the earlier checkpoints are kept") from e
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        rotate_checkpoints(run_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def check_ranks_in_sync(accelerator: Accelerator, module: torch.nn.Module) -> None:
    """Every process must hold bit-identical weights (the update averages the gradients, every process
    applies the same update): compare a digest of all weights across processes."""
    if accelerator.num_processes == 1:
        return
    digests = accelerator.gather(weights_digest(module)[None]).cpu()
    if not (digests == digests[0]).all():
        raise RuntimeError("the processes' weights differ: distributed training is out of sync")


def load_data(
    train_cfg: TrainConfig, task: Task, announce: bool, share: NodeShare | None = None
) -> tuple[OfflineData, OfflineData | None, Path, bool | None]:
    """(training data, held-out demos or None, dataset path, sparse) for the task; large arrays through
    `share` (one copy per node) when given."""
    if isinstance(task, RobotTask):
        if not train_cfg.dataset:
            raise ValueError("--task robot needs --dataset FILE.hdf5 (tools/convert_teleop.py makes one from "
                             "teleoperation logs)")
        if train_cfg.eval_episodes > 0:
            raise ValueError("--task robot has no simulator to evaluate in: set --eval-episodes 0 (offline "
                             "metrics on the dataset's mask/valid demos are reported instead)")
        summary = validate_hdf5(train_cfg.dataset)
        if announce:
            tqdm.write(str(summary))
            if not summary.valid:
                tqdm.write(f"warning: {summary.path}: mask/valid lists no demos, so this run reports no offline "
                           f"metrics (convert with --valid-fraction above 0 to hold some demos out)")
        data = load_robot_data(summary.path, "train", train_cfg.data_cache, share)
        valid = load_robot_data(summary.path, "valid", train_cfg.data_cache, share) if summary.valid else None
        return data, valid, summary.path, None
    sparse = task.sparse if train_cfg.sparse is None else train_cfg.sparse
    if train_cfg.dataset:
        path = Path(train_cfg.dataset)
        if not path.exists():
            raise FileNotFoundError(f"--dataset {path}: no such file")
    else:
        path = find_dataset(task.dataset_name, train_cfg.dataset_dir)
    return load_ogbench_task_data(path, task, train_cfg.task_id, sparse, share), None, path, sparse


def compile_update(train_cfg: TrainConfig, device: torch.device) -> bool:
    """--compile / --no-compile as given; by default the update is compiled (as CUDA graphs) on CUDA only:
    on a CPU the compilation costs more time than a short run saves."""
    return device.type == "cuda" if train_cfg.compile is None else train_cfg.compile


def make_policy(agent: torch.nn.Module, device: torch.device):
    """observation (numpy) -> action chunk (numpy, (h, action_dim)) with the agent's act()."""

    def policy(observation: Nested[np.ndarray]) -> np.ndarray:
        obs = map_obs(lambda array: torch.as_tensor(array, device=device).unsqueeze(0), observation)
        return agent.act(obs)[0].cpu().numpy()

    return policy


@dataclass
class TrainingOutcome:
    step: int
    """the last step trained"""
    metrics: dict[str, float] = field(default_factory=dict)
    """the last evaluation's (or offline validation's) metrics, on the main process"""
    stopped_by: str | None = None
    """the signal that stopped the run early (after a checkpoint), if any"""


def train(train_cfg: TrainConfig, agent_cfg: Any) -> TrainingOutcome:
    """Train, evaluate and checkpoint until `steps`, a stop signal (checkpoint, then return) or a non-finite
    value (SystemExit naming it; the last good checkpoint stays)."""
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    from visual_lps.envs.ogbench_env import evaluate, make_eval_env

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
    run_dir = Path(train_cfg.out)
    task = get_task(train_cfg.task)
    try:
        # The node's first process loads first; the others map the observations it shared (NodeShare).
        share = NodeShare(f"{os.getppid()}", accelerator.local_process_index,
                          int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        with accelerator.local_main_process_first():
            data, valid_data, path, sparse = load_data(train_cfg, task, accelerator.is_main_process, share)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    accelerator.wait_for_everyone()
    share.release()

    torch.manual_seed(train_cfg.seed)  # identical initial weights on every process
    spec, action_dim = obs_spec(data.observations, agent_cfg.frame_stack), int(data.actions.shape[1])
    agent_cls = AGENTS[train_cfg.agent][1]
    try:
        agent = agent_cls(agent_cfg, spec, action_dim)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    if isinstance(task, RobotTask):
        # The agent works in [-1, 1] and on standardised proprioception; the statistics of the training demos
        # are buffers of the agent, so they travel with every checkpoint (act() undoes the action scaling).
        agent.set_action_bounds(data.actions.min(axis=0), data.actions.max(axis=0))
        agent.set_state_statistics(*state_statistics(data))
        for split in filter(None, (data, valid_data)):
            split.actions = agent.normalize_actions(torch.from_numpy(split.actions)).numpy()
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
            return ChunkSampler(split, agent_cfg.horizon, accelerator.device, seed=seed,
                                frame_stack=agent_cfg.frame_stack, draw_random=random_inputs,
                                placement=train_cfg.data_on)
        except ValueError as e:
            raise SystemExit(f"error: {path}: {what}: {e}") from None

    sampler = make_sampler(data, train_cfg.seed * 1000 + accelerator.process_index, "training demos",
                           core.draw_random_inputs)
    valid_sampler = None  # offline metrics of robot runs, main process only; fixed batches (reseeded each time)
    if valid_data is not None and accelerator.is_main_process:
        valid_sampler = make_sampler(valid_data, train_cfg.seed, "held-out (mask/valid) demos", None)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress, sampler)

    if train_cfg.resume:
        ckpt, skipped = latest_complete_checkpoint(run_dir)
        for reason in skipped:
            accelerator.print(f"warning: {reason}; resuming from an earlier one")
        if ckpt is None:
            found = f"only incomplete ones ({len(skipped)})" if skipped else "no checkpoint"
            raise SystemExit(f"error: --resume: {run_dir / 'checkpoints'} holds {found}")
        try:
            accelerator.load_state(str(ckpt))
        except Exception as e:  # a damaged checkpoint written before manifests
            raise SystemExit(f"error: --resume: cannot load checkpoint {ckpt} ({type(e).__name__}: {e})") from None
        accelerator.print(f"resumed from {ckpt} at step {progress.step}")

    writer = None
    eval_env = None
    if accelerator.is_main_process:
        if train_cfg.overwrite:
            clear_run_folder(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(run_dir / "config.yaml", train_cfg, agent_cfg)
        agent_spec = {"obs_spec": spec_to_yaml(spec), "action_dim": action_dim, "dataset": str(path), "sparse": sparse}
        (run_dir / "agent_spec.yaml").write_text(yaml.safe_dump(agent_spec, sort_keys=False))
        writer = SummaryWriter(str(run_dir / "tb"))
        if train_cfg.eval_episodes > 0 and isinstance(task, OGBenchTask):
            eval_env = make_eval_env(task.eval_env_name(train_cfg.task_id))
        target = f"{task.name} task{train_cfg.task_id}" if isinstance(task, OGBenchTask) else task.name
        accelerator.print(
            f"training {train_cfg.agent} on {target} "
            f"({len(sampler)} chunks from {data.num_episodes} episodes of {path}) -> {run_dir}"
        )
        accelerator.print(f"data: {sampler.placement_reason}{share.describe()}")

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
        core.eval()
        result = evaluate(
            make_policy(core, accelerator.device), eval_env, train_cfg.eval_episodes,
            seed=train_cfg.seed * 100_000, frame_stack=agent_cfg.frame_stack, progress=train_cfg.progress,
        )
        core.train()
        tqdm.write(f"step {step}: success rate {result.success_rate:.2%} over {train_cfg.eval_episodes} episodes")
        return {"eval/success_rate": result.success_rate, "eval/return": result.mean_return}

    def checkpoint(step: int) -> None:
        """Only weights known to be finite and in sync across processes are saved."""
        update.check_finite()
        start = time.time()
        check_ranks_in_sync(accelerator, core)
        saved = save_checkpoint(accelerator, run_dir, step, train_cfg.keep_last)
        if writer is not None:
            writer.add_scalar("perf/checkpoint_seconds", time.time() - start, step)
        if accelerator.num_processes > 1:
            accelerator.print(f"checkpoint {saved.name}: weights identical on all {accelerator.num_processes} processes")

    outcome = TrainingOutcome(step=progress.step)
    update = UpdateStep(core, adam, compile=compile_update(train_cfg, accelerator.device),
                        backend=train_cfg.compile_backend, mixed_precision=accelerator.mixed_precision,
                        first_step=progress.step)
    accelerator.print(f"update: {update.describe()}")
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
                    bar.set_postfix(critic=f"{values['critic/loss']:.3g}", q=f"{values['critic/q_mean']:.3g}")
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
    except FloatingPointError as e:
        last = latest_checkpoint(run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
        raise SystemExit(f"error: {e}; the run stops here, {kept}") from None
    except CheckpointWriteError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        stop.restore()
        bar.close()
        if writer is not None:
            writer.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return outcome
