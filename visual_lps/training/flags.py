"""Flags: one per field of `TrainConfig` and of the agent's config (`--batch-size 128`, `--horizon 10`,
`--prior-hidden-dims 256,256`), the field's docstring as its help, layered as dataclass defaults <
configs/<family>.yaml (or the saved config of a resumed run) < the flags given; and what --resume may change."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from visual_lps.agents import AGENTS
from visual_lps.config import TrainConfig, as_flag_value, base_type, check_ranges, coerce, field_docs, load_yaml
from visual_lps.runs.folder import RunFolder, check_run_folder, default_out
from visual_lps.tasks import NO_SIMULATOR, get_task
from visual_lps.training.trackers import check_tracker_installed

def _parse_value(annotation: Any, text: str) -> Any:
    kind = base_type(annotation)
    if typing.get_origin(kind) is tuple:
        (item, _) = typing.get_args(kind)
        return tuple(item(x) for x in text.split(",") if x.strip())
    return kind(text)


def _value_parser(annotation: Any):
    """The argparse type of a field, named so that a bad value reads 'invalid float value: 'abc''."""

    def parse(text: str) -> Any:
        return _parse_value(annotation, text)

    kind = base_type(annotation)
    if typing.get_origin(kind) is tuple:
        parse.__name__ = f"comma-separated {typing.get_args(kind)[0].__name__} list"
    else:
        parse.__name__ = kind.__name__
    return parse


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
        kind = base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # argparse %-formats help strings: a literal '%' in a docstring must be doubled.
        help_text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text,
                               type=_value_parser(hints[f.name]))
    return added


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Any]:
    """Defaults < configs/<family>.yaml (or the saved config of a resumed run) < flags given."""
    parser = argparse.ArgumentParser(description="Train an agent (LPS by default) on an OGBench task.")
    flags = add_dataclass_flags(parser, TrainConfig, "training")
    for cfg_cls in dict.fromkeys(entry.config for entry in AGENTS.values()):
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
    known = {f.name for entry in AGENTS.values() for f in fields(entry.config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown agent field(s) {unknown}; no agent has them")
    own = {f.name for f in fields(agent_cls)}
    return {key: value for key, value in values.items() if key in own}


def _resolve(train_given: dict[str, Any], agent_given: dict[str, Any]) -> tuple[TrainConfig, Any]:
    if train_given.get("resume"):
        probe = TrainConfig(**train_given)
        out = Path(probe.out or default_out(probe))
        saved = RunFolder(out).config
        if not saved.exists():
            raise SystemExit(f"error: --resume: no run to resume at {out} ({saved} is missing)")
        base = load_yaml(saved)
        base["train"]["out"] = str(out)
        base["train"]["overwrite"] = False  # what started the run, not what continues it
        refuse_changes_on_resume(saved, base, train_given, agent_given)
    else:
        task = get_task(train_given.get("task", TrainConfig.task))
        base = task.defaults()
    train = TrainConfig(**(coerce(TrainConfig, base["train"], "config") | train_given))
    task = get_task(train.task)
    check_ranges(train)
    if train.online_steps and not task.has_simulator:
        raise SystemExit(f"error: --online-steps {train.online_steps}: {NO_SIMULATOR}")
    check_tracker_installed(train.log_with)
    if train.agent not in AGENTS:
        raise SystemExit(f"error: unknown --agent {train.agent!r}; available: {', '.join(AGENTS)}")
    agent_cls = AGENTS[train.agent].config
    foreign = sorted(k for k in agent_given if k not in {f.name for f in fields(agent_cls)})
    if foreign:
        raise SystemExit(f"error: flag(s) {foreign} do not apply to agent {train.agent!r}")
    agent_base = base["agent"] if train.resume else task_defaults_for(agent_cls, base["agent"], task.config_path or Path(f"task {task.name}"))
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
    "channels_last", "tf32", "log_with", "wandb_project", "online_steps", "utd", "warmup_steps", "buffer_capacity",
    "offline_ratio", "online_episode_steps", "explore_noise", "eval_videos",
})
"""fields a resumed run may change: how long and how it runs, what it logs and keeps, where the data are, and how
the online phase that follows the offline one runs (a finished offline run continues online with them).
Everything else (task, data, seed, batch, every agent field) defines what is learned and stays as it was;
precision and compilation may change, at the cost of bit-exactness with an uninterrupted run"""


def refuse_changes_on_resume(saved: Path, base: dict, train_given: dict[str, Any], agent_given: dict[str, Any]) -> None:
    """SystemExit naming every flag of a --resume that would change what the run learns, with both values."""
    agent_cls = AGENTS[base["train"].get("agent", TrainConfig.agent)].config
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
