"""Run configuration: typed dataclasses, layered as defaults < configs/<family>.yaml < command-line flags,
and the rules of a run folder (what --resume may change, what --overwrite replaces).

Every field of `TrainConfig` and of the agent's config is a flag (`--batch-size 128`, `--horizon 10`,
`--prior-hidden-dims 256,256`), with the field's docstring as its help.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import shutil
import tempfile
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from visual_lps.agents import AGENTS
from visual_lps.data.chunks import PLACEMENTS
from visual_lps.tasks import get_task


@dataclass
class TrainConfig:
    """What to train on, for how long, and where the run goes."""

    task: str = "cube-single"
    """task to train: cube-single, cube-double, scene, puzzle-3x3, puzzle-4x4, visual-<one of those>
    (visual-cube = visual-cube-single), or robot (an HDF5 dataset given by --dataset)"""
    task_id: int = 1
    """OGBench single-task id (1..5) the rewards are relabelled for and evaluation runs"""
    agent: str = "lps"
    """agent to train: lps, flow-bc (the prior alone), qc-fql or dsrl (visual_lps.agents.AGENTS)"""
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
    eval_every: int = 100_000
    """evaluate every this many steps (and at the end)"""
    eval_episodes: int = 50
    """evaluation episodes; 0 turns evaluation off"""
    log_every: int = 1_000
    """write training scalars to TensorBoard every this many steps"""
    save_every: int = 100_000
    """write a checkpoint every this many steps (and at the end)"""
    keep_last: int = 0
    """keep only the newest this many checkpoints; 0 keeps every one (a checkpoint each --save-every steps: a
    run warns at start when they will not fit the free disk)"""
    mixed_precision: str | None = None
    """'no', 'bf16' or 'fp16' autocast; default: as `accelerate launch` / its config says (off)"""
    compile: bool | None = None
    """compile the whole update (forward, backward, Adam, target update) as one graph, replayed as CUDA graphs
    on GPUs; default: on for CUDA, off on CPUs (where compiling takes longer than a short run gains)"""
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
            "eval_every": (self.eval_every >= 1, "at least 1"),
            "eval_episodes": (self.eval_episodes >= 0, "at least 0"),
            "log_every": (self.log_every >= 1, "at least 1"),
            "save_every": (self.save_every >= 1, "at least 1"),
            "keep_last": (self.keep_last >= 0, "at least 0 (0 keeps all)"),
            "mixed_precision": (self.mixed_precision in (None, "no", "bf16"), "no or bf16"),
            "data_on": (self.data_on in PLACEMENTS, " or ".join(PLACEMENTS)),
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


def _base_type(annotation: Any) -> Any:
    """int for `int | None`, tuple for `tuple[int, ...]`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _parse_value(annotation: Any, text: str) -> Any:
    kind = _base_type(annotation)
    if typing.get_origin(kind) is tuple:
        (item, _) = typing.get_args(kind)
        return tuple(item(x) for x in text.split(",") if x.strip())
    return kind(text)


def _value_parser(annotation: Any):
    """The argparse type of a field, named so that a bad value reads 'invalid float value: 'abc''."""

    def parse(text: str) -> Any:
        return _parse_value(annotation, text)

    kind = _base_type(annotation)
    if typing.get_origin(kind) is tuple:
        parse.__name__ = f"comma-separated {typing.get_args(kind)[0].__name__} list"
    else:
        parse.__name__ = kind.__name__
    return parse


def coerce(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check that `values` (from YAML or a saved run) name fields of `cls`, and give them the field types."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown} for {cls.__name__}; known: {sorted(hints)}")
    out = {}
    for key, value in values.items():
        if value is not None and typing.get_origin(_base_type(hints[key])) is tuple:
            value = tuple(value)
        out[key] = value
    return out


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, title: str, skip: set[str] = frozenset()
) -> set[str]:
    """One flag per field (but those in `skip`, already added), default None (unset), so that only flags given
    on the command line override. Returns the field names added."""
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    added = set()
    for f in fields(cls):
        if f.name in skip:
            continue
        added.add(f.name)
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # argparse %-formats help strings: a literal '%' in a docstring must be doubled.
        help_text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text,
                               type=_value_parser(hints[f.name]))
    return added


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

    path.write_text(yaml.safe_dump({"train": plain(train), "agent": plain(agent)}, sort_keys=False))


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


def task_defaults_for(agent_cls: type, values: dict[str, Any], source: Path) -> dict[str, Any]:
    """A task file's agent section holds defaults for every agent: the fields of `agent_cls`, checked that each
    field named belongs to some agent (a misspelt one is an error, not a silent no-op)."""
    known = {f.name for cfg, _ in AGENTS.values() for f in fields(cfg)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown agent field(s) {unknown}; no agent has them")
    own = {f.name for f in fields(agent_cls)}
    return {key: value for key, value in values.items() if key in own}


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
    agent_base = base["agent"] if train.resume else task_defaults_for(agent_cls, base["agent"], task.config_path)
    agent = agent_cls(**(coerce(agent_cls, agent_base, "config") | agent_given))
    agent.for_task(train.task)
    check_ranges(agent)
    if train.out is None:
        train.out = default_out(train)
    check_run_folder(Path(train.out), train.resume, train.overwrite)
    return train, agent


RESUMABLE_CHANGES = frozenset({
    "steps", "eval_every", "eval_episodes", "log_every", "save_every", "keep_last", "progress", "out", "resume",
    "overwrite", "dataset_dir", "data_cache", "data_on", "compile", "compile_backend", "mixed_precision",
    "channels_last", "tf32",
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


def check_writable(out: Path) -> None:
    """Write a probe file in `out` and in its checkpoints/ and tb/ where they exist: a run that cannot write its
    folder stops before it loads anything, in one line, not at its first checkpoint hours later."""
    for folder in (out, out / "checkpoints", out / "tb"):
        if folder != out and not folder.exists():
            continue
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise SystemExit(f"error: --out {out}: cannot write to {folder} ({e.strerror or e})") from None


def clear_run_folder(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
