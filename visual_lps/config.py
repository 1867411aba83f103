"""The run's configuration as a typed dataclass (`TrainConfig`, a docstring per field; each agent's own config
lives with the agent), and the plain helpers every layer shares: range checks, field docs, YAML in and out.

Importing it imports neither torch nor any agent: tools, the data layer and the deployment side read configs
without them. How flags and task files are layered onto these defaults is `visual_lps.training.flags`."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visual_lps.files import write_text_atomic

PLACEMENTS = ("auto", "device", "host")
"""--data-on choices: where the observations live (see visual_lps.data.chunks.choose_placement)"""
TRACKERS = ("tensorboard", "wandb")
"""--log-with choices (see visual_lps.training.trackers)"""

@dataclass
class TrainConfig:
    """What to train on, for how long, and where the run goes."""

    task: str = "cube-single"
    """task to train: cube-single, cube-double, scene, puzzle-3x3, puzzle-4x4, visual-<one of those>
    (visual-cube = visual-cube-single), or robot (an HDF5 dataset given by --dataset)"""
    task_id: int = 1
    """OGBench single-task id (1..5) the rewards are relabelled for and evaluation runs"""
    agent: str = "lps"
    """agent to train: lps, meanflow-bc (its one-step prior alone), flow-bc (10-step flow BC), qc-fql or dsrl (visual_lps.agents.AGENTS)"""
    dataset: str | None = None
    """path of a dataset file (required for --task robot); default: <dataset-dir>/<task>-play-v0.npz"""
    data_cache: str = "auto"
    """robot HDF5 data: 'auto' holds it in RAM when it fits, 'ram' always, 'none' reads batches from disk"""
    data_on: str = "auto"
    """where the observations live: 'auto' (on a CUDA device when they take at most half its free memory, else in
    host memory with batches copied ahead), 'device' or 'host'"""
    dataset_dir: str = "data/ogbench"
    """folder searched for (or downloaded into) OGBench datasets"""
    sparse: bool | None = None
    """sparse rewards (-1 until solved, as the paper's '-sparse' variants); default per task"""
    steps: int = 1_000_000
    """total training steps (a resumed run continues up to this number)"""
    batch_size: int = 256
    """batch size per process (the global batch is this times the number of processes)"""
    seed: int = 0
    """seed of weights, sampling and evaluation"""
    online_steps: int = 0
    """environment steps of online fine-tuning in the task's simulator after the offline --steps (0: offline only);
    a finished run continues online with --resume --online-steps N. Every agent fine-tunes; the BC agents, which
    read no reward, behaviour-clone the growing buffer"""
    utd: int = 1
    """online phase: updates per environment step (the public LPS code's utd_ratio)"""
    warmup_steps: int = 0
    """online phase: environment steps taken before updates start (the public LPS code starts at once)"""
    buffer_capacity: int = 0
    """rows the replay buffer holds (the offline data plus one per online step and one per online episode); 0: no
    limit. At capacity the oldest episodes, offline ones first, make room"""
    offline_ratio: float | None = None
    """online phase: the fraction of each batch drawn from the offline data (0.5: the public code's robot
    fine-tuning); default: uniformly over the whole buffer (its simulator runs)"""
    explore_noise: float = 0.0
    """online phase: standard deviation of the Gaussian noise added to each executed action, in half action ranges,
    the result clipped to the range (0: the policy's actions alone, as the public LPS code acts)"""
    online_episode_steps: int = 0
    """online phase: time limit of an episode in environment steps; 0: the task's (evaluation keeps the task's)"""
    eval_every: int = 100_000
    """evaluate every this many updates, offline and online counted together (and at the end of each phase)"""
    eval_episodes: int = 50
    """evaluation episodes; 0 turns evaluation off"""
    eval_videos: int = 0
    """the first this many episodes of each evaluation recorded as a video, <out>/videos/step_N.mp4 (and logged to
    W&B with --log-with wandb): the policy's camera frames on visual tasks, the simulator's view on state tasks
    (rendering is slow on a CPU: a few frames per second)"""
    log_every: int = 1_000
    """write training scalars to TensorBoard every this many steps"""
    log_with: str = "tensorboard"
    """where the scalars go, through Accelerate's trackers: 'tensorboard' (tb/ in the run folder) or 'wandb' (Weights &
    Biases as well, with the config as hyperparameters; WANDB_MODE=offline is respected; tb/ is always written, as
    tools/report.py reads it)"""
    wandb_project: str = "visual-lps"
    """the Weights & Biases project of --log-with wandb (each run is named after its --out folder)"""
    save_every: int = 100_000
    """write a checkpoint every this many steps (and at the end)"""
    keep_last: int = 0
    """keep only the newest this many checkpoints; 0 keeps every one (a checkpoint each --save-every steps: a
    run warns at start when they will not fit the free disk)"""
    mixed_precision: str | None = None
    """'no' or 'bf16' autocast (fp16 is refused: it needs loss scaling); default: as `accelerate launch` / its config
    says (off)"""
    compile: bool | None = None
    """compile the whole update (forward, backward, Adam, target update) as one graph, replayed as CUDA graphs
    on GPUs; default: on for CUDA, and on a CPU for a run of 20,000 steps or more to go (a shorter one starts at
    once, eager); --no-compile turns it off. Inductor's on-disk cache is ~/.cache/visual-lps/torchinductor"""
    compile_backend: str = "inductor"
    """torch.compile backend of the compiled update: 'inductor', or 'eager' / 'aot_eager' to debug a compile problem"""
    channels_last: bool = False
    """channels-last convolution weights for image encoders (faster on tensor-core GPUs)"""
    tf32: bool = True
    """on CUDA: float32 matmuls and convolutions on TF32 tensor cores (JAX's default on these GPUs); --no-tf32 for full float32"""
    out: str | None = None
    """run folder (config, TensorBoard logs, checkpoints); default runs/<task>-task<id>-<agent>-s<seed>"""
    resume: bool = False
    """continue the run in --out from its latest checkpoint"""
    progress: bool = True
    """show a progress bar"""
    overwrite: bool = False
    """start a new run in an --out folder that already holds one, deleting its checkpoints, logs and config"""

    def ranges(self) -> dict[str, tuple[bool, str]]:
        """field -> (its value is allowed, what is allowed)"""
        return {
            "task_id": (1 <= self.task_id <= 5, "1..5"),
            "steps": (self.steps >= 1, "at least 1"),
            "batch_size": (self.batch_size >= 1, "at least 1"),
            "online_steps": (self.online_steps >= 0, "at least 0"),
            "utd": (self.utd >= 1, "at least 1"),
            "warmup_steps": (self.warmup_steps >= 0, "at least 0"),
            "buffer_capacity": (self.buffer_capacity >= 0, "at least 0 (0: no limit)"),
            "offline_ratio": (self.offline_ratio is None or 0.0 <= self.offline_ratio <= 1.0, "in [0, 1]"),
            "explore_noise": (self.explore_noise >= 0.0, "at least 0"),
            "online_episode_steps": (self.online_episode_steps >= 0, "at least 0 (0: the task's limit)"),
            "eval_every": (self.eval_every >= 1, "at least 1"),
            "eval_episodes": (self.eval_episodes >= 0, "at least 0"),
            "eval_videos": (0 <= self.eval_videos <= self.eval_episodes, "0 to --eval-episodes"),
            "log_every": (self.log_every >= 1, "at least 1"),
            "save_every": (self.save_every >= 1, "at least 1"),
            "keep_last": (self.keep_last >= 0, "at least 0 (0 keeps all)"),
            "mixed_precision": (self.mixed_precision in (None, "no", "bf16"), "no or bf16"),
            "data_on": (self.data_on in PLACEMENTS, " or ".join(PLACEMENTS)),
            "log_with": (self.log_with in TRACKERS, " or ".join(TRACKERS)),
        }


def as_flag_value(value: Any) -> str:
    """A value as it is typed on the command line (tuples comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def check_ranges(config: Any) -> None:
    """SystemExit naming the first field of `config` (a dataclass with `ranges()`) whose value is not allowed,
    as the flag a user types, with that field's own range."""
    for name, (ok, allowed) in config.ranges().items():
        if not ok:
            shown = as_flag_value(getattr(config, name))
            raise SystemExit(f"error: --{name.replace('_', '-')} {shown}: out of range, must be {allowed}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field, including inherited ones."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = str(nxt.value.value)
    return docs


def base_type(annotation: Any) -> Any:
    """int for `int | None`, tuple for `tuple[int, ...]`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def coerce(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check that `values` (from YAML or a saved run) name fields of `cls`, and give them the field types."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(hints)}")
    out = {}
    for key, value in values.items():
        if value is not None and typing.get_origin(base_type(hints[key])) is tuple:
            value = tuple(value)
        out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, dict[str, Any]]:
    with open(path) as f:
        content = yaml.safe_load(f) or {}
    unknown = set(content) - {"train", "agent"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; expected 'train' and 'agent'")
    return {"train": content.get("train") or {}, "agent": content.get("agent") or {}}


def save_run_config(path: Path, train: TrainConfig, agent: Any) -> None:
    def plain(cfg: Any) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}

    write_text_atomic(path, yaml.safe_dump({"train": plain(train), "agent": plain(agent)}, sort_keys=False))
