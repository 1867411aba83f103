"""Tables and learning curves from run folders (a tools/sweep.py folder, or any folder holding runs).

    python tools/report.py runs/sweep [--steps 25000,50000] [--out runs/sweep/report] [--overwrite]

Reads every run below the folder (its config.yaml names task, agent and seed; its TensorBoard logs hold
eval/success_rate) and writes OUT/results.md (success % per task and agent: mean and standard deviation over
seeds, at each --steps, with the paper's published LPS number beside) and OUT/curves_<task>.png (success
against training steps: the mean over seeds and a band from the lowest to the highest seed). Runs fine-tuned online
(`train.py --online-steps`) are drawn on one curve across both phases, the update at which their online phase
began marked by a dotted line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from visual_lps.files import atomic_write, write_text_atomic
from visual_lps.runs.folder import CHECKPOINTS, CONFIG, PHASE_BOUNDARY, RunFolder

PUBLISHED_LPS = {"cube-single": 95, "cube-double": 41, "scene": 79, "puzzle-3x3": 100, "puzzle-4x4": 22}
"""the paper's task1 success rates (%) of LPS; visual task1: 48"""
PUBLISHED_LPS_VISUAL = 48


@dataclass
class RunCurve:
    task: str
    task_id: int
    agent: str
    seed: int
    folder: Path
    steps: list[int]
    success: list[float]
    """percent"""
    online_from: int | None = None
    """the update at which the run's online phase began, if it had one"""

    def at(self, step: int) -> float | None:
        """Success of the last evaluation at or before `step`; None if the run has not been trained that far."""
        if self.steps[-1] < step:
            return None
        values = [s for t, s in zip(self.steps, self.success) if t <= step]
        return values[-1] if values else None


def published(task: str, task_id: int) -> int | None:
    if task_id != 1:
        return None
    return PUBLISHED_LPS_VISUAL if task.startswith("visual-") else PUBLISHED_LPS.get(task)


def read_runs(root: Path) -> tuple[list[RunCurve], list[str]]:
    """Every run below `root` with evaluations, and a note for each run without."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs, notes = [], []
    for config_path in sorted(root.rglob(CONFIG)):
        folder = config_path.parent
        if CHECKPOINTS in folder.relative_to(root).parts or not RunFolder(folder).logs.is_dir():
            continue  # a checkpoint's copy of its run's config, or a run that never logged
        try:
            train = (yaml.safe_load(config_path.read_text()) or {})["train"]
            task, agent, seed, task_id = train["task"], train["agent"], int(train["seed"]), int(train["task_id"])
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as e:
            notes.append(f"{config_path}: not a run config ({type(e).__name__}: {e}); skipped")
            continue
        events = EventAccumulator(str(RunFolder(folder).logs), size_guidance={"scalars": 0})
        events.Reload()
        if "eval/success_rate" not in events.Tags().get("scalars", []):
            notes.append(f"{folder}: no evaluations logged (eval/success_rate); skipped")
            continue
        scalars = events.Scalars("eval/success_rate")
        by_step = {s.step: 100 * s.value for s in scalars}  # a resumed run may log a step twice: keep the last
        steps = sorted(by_step)
        boundary = (events.Scalars(PHASE_BOUNDARY)[0].step if PHASE_BOUNDARY in events.Tags().get("scalars", [])
                    else None)
        runs.append(RunCurve(task, task_id, agent, seed, folder, steps, [by_step[s] for s in steps], boundary))
    return runs, notes


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f} ({len(values)})"


def table(runs: list[RunCurve], steps: list[int] | None) -> str:
    """Markdown: for each step, a row per task, a column per agent."""
    agents = list(dict.fromkeys(run.agent for run in runs))
    tasks = list(dict.fromkeys((run.task, run.task_id) for run in runs))
    if steps is None:  # the last step every run of the table reached
        steps = [min(run.steps[-1] for run in runs)]
    lines = []
    for step in steps:
        lines += [f"Success rate (%) at step {step:,}: mean ± standard deviation over seeds (number of seeds; "
                  f"runs not yet evaluated at this step are left out). The paper's LPS numbers are after 1M steps.",
                  "",
                  "| task | " + " | ".join(agents) + " | paper, LPS |",
                  "| --- | " + " | ".join("---" for _ in agents) + " | --- |"]
        for task, task_id in tasks:
            row = []
            for agent in agents:
                values = [run.at(step) for run in runs if (run.task, run.task_id, run.agent) == (task, task_id, agent)]
                row.append(cell([v for v in values if v is not None]))
            paper = published(task, task_id)
            lines.append(f"| {task} task{task_id} | " + " | ".join(row) + f" | {'-' if paper is None else paper} |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[RunCurve], task: str, task_id: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_agent: dict[str, list[RunCurve]] = defaultdict(list)
    for run in runs:
        if (run.task, run.task_id) == (task, task_id):
            by_agent[run.agent].append(run)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for agent, curves in by_agent.items():
        steps = sorted({s for run in curves for s in run.steps})
        per_step = [[v for run in curves if (v := run.at(s)) is not None] for s in steps]
        mean = [statistics.mean(v) for v in per_step]
        line, = ax.plot(steps, mean, marker="o", markersize=3, label=f"{agent} ({len(curves)} seeds)")
        ax.fill_between(steps, [min(v) for v in per_step], [max(v) for v in per_step], color=line.get_color(),
                        alpha=0.2, linewidth=0)
    boundaries = sorted({run.online_from for run in runs if (run.task, run.task_id) == (task, task_id)
                         and run.online_from is not None})
    for i, boundary in enumerate(boundaries):
        ax.axvline(boundary, color="black", linestyle=":", linewidth=1,
                   label=f"online phase begins (update {boundary:,})" if i == 0 or len(boundaries) < 3 else None)
    paper = published(task, task_id)
    if paper is not None:
        ax.axhline(paper, color="grey", linestyle="--", linewidth=1, label=f"paper, LPS ({paper}%, after 1M steps)")
    ax.set(xlabel="training step", ylabel="success rate (%)", title=f"{task} task{task_id}", ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as written:
        fig.savefig(written, format="png")
    plt.close(fig)


def positive_steps(text: str) -> list[int]:
    steps = [int(x) for x in text.split(",") if x.strip()]
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: steps must be positive")
    return steps


positive_steps.__name__ = "comma-separated step list"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="folder holding run folders (e.g. a tools/sweep.py --out)")
    parser.add_argument("--steps", type=positive_steps, default=None,
                        help="comma-separated steps of the tables (default: the last step every run reached)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RUNS/report)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results.md and curves")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        parser.error(f"{args.runs}: no such folder")
    out = args.out or args.runs / "report"
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")
    runs, notes = read_runs(args.runs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not runs:
        print(f"error: no evaluated runs below {args.runs}", file=sys.stderr)
        return 1
    tasks = list(dict.fromkeys((run.task, run.task_id) for run in runs))
    outputs = [out / "results.md"] + [out / f"curves_{task}_task{task_id}.png" for task, task_id in tasks]
    existing = [path for path in outputs if path.exists()]
    if existing and not args.overwrite:
        print(f"error: {', '.join(map(str, existing))} already exist(s); give --overwrite to replace", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    text = table(runs, args.steps)
    online = [run for run in runs if run.online_from is not None]
    if online:
        text += (f"\n{len(online)} of the runs were fine-tuned online after {', '.join(sorted({f'{r.online_from:,}' for r in online}))} "
                 f"offline updates: their steps count offline and online updates together.\n")
    seeds = sorted({run.seed for run in runs})
    header = (f"# Results from {args.runs}\n\n{len(runs)} evaluated runs; seeds {', '.join(map(str, seeds))}. "
              f"Curves: " + ", ".join(p.name for p in outputs[1:]) + ".\n\n")
    write_text_atomic(outputs[0], header + text)
    for (task, task_id), path in zip(tasks, outputs[1:]):
        plot(runs, task, task_id, path)
    print(text)
    print(f"wrote {', '.join(map(str, outputs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
