"""Run a grid of training runs (tasks x agents x seeds), each a normal run folder, one after the other.

    python tools/sweep.py --tasks cube-single --agents flow-bc,lps,qc-fql,dsrl --seeds 0,1 --steps 25000 \
        --out runs/sweep [--dry-run] [-- any other train.py flags]

Runs live in OUT/<task>/<agent>/seed<N>. Run it again and it goes on where it stopped: finished runs (a complete
checkpoint at --steps) are skipped, interrupted ones resumed (`train.py --resume`), the others started. A run
that fails stops the sweep (exit 1); one stopped by a signal stops it with that run's status (130 or 143).
Read the results with tools/report.py.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from visual_lps.agents import AGENTS  # noqa: E402
from visual_lps.checkpoint import latest_complete_checkpoint  # noqa: E402
from visual_lps.tasks import TASKS  # noqa: E402


@dataclass(frozen=True)
class SweepRun:
    task: str
    agent: str
    seed: int
    out: Path

    def state(self, steps: int) -> str:
        """'finished', 'interrupted' (resumable) or 'new'."""
        checkpoint, _ = latest_complete_checkpoint(self.out) if (self.out / "checkpoints").is_dir() else (None, [])
        if checkpoint is not None and int(checkpoint.name.removeprefix("step_")) >= steps:
            return "finished"
        return "interrupted" if checkpoint is not None else "new"

    def command(self, steps: int, state: str, extra: list[str]) -> list[str]:
        train = [sys.executable, str(REPO / "train.py")]
        if state == "interrupted":
            return [*train, "--resume", "--out", str(self.out), "--steps", str(steps)]
        # A folder with a config but no complete checkpoint holds nothing worth keeping: start it again.
        again = ["--overwrite"] if (self.out / "config.yaml").exists() else []
        return [*train, "--task", self.task, "--agent", self.agent, "--seed", str(self.seed), "--steps", str(steps),
                "--out", str(self.out), *again, *extra]


def comma_list(kind: type, choices=None):
    def parse(text: str) -> list:
        values = [kind(item) for item in text.split(",") if item.strip()]
        bad = [v for v in values if choices is not None and v not in choices]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(map(str, choices))}" if bad else
                                             "an empty list")
        return values

    parse.__name__ = f"comma-separated {kind.__name__} list"
    return parse


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=comma_list(str, list(TASKS)), required=True, help="comma-separated tasks")
    parser.add_argument("--agents", type=comma_list(str, list(AGENTS)), default=list(AGENTS),
                        help=f"comma-separated agents (default: all: {','.join(AGENTS)})")
    parser.add_argument("--seeds", type=comma_list(int), default=[0], help="comma-separated seeds (default: 0)")
    parser.add_argument("--steps", type=int, required=True, help="training steps of every run (the same budget)")
    parser.add_argument("--out", default="runs/sweep", help="folder of the sweep's runs (default: runs/sweep)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and what would be done, run nothing")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")

    runs = [SweepRun(task, agent, seed, out / task / agent / f"seed{seed}")
            for task in args.tasks for agent in args.agents for seed in args.seeds]
    plan = [(run, run.state(args.steps)) for run in runs]
    verbs = {"finished": "skip (finished)", "interrupted": "resume", "new": "start"}
    for i, (run, state) in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {run.task} {run.agent} seed {run.seed}: {verbs[state]} -> {run.out}", flush=True)
        if args.dry_run or state == "finished":
            continue
        command = run.command(args.steps, state, extra)
        print("$", shlex.join(command), flush=True)
        code = subprocess.run(command, cwd=REPO).returncode
        if code in (130, 143):
            print(f"sweep stopped: {run.out} was stopped by a signal after its checkpoint; run the same command "
                  f"to go on", file=sys.stderr)
            return code
        if code != 0:
            print(f"error: {run.out} failed (exit {code}); the sweep stops here", file=sys.stderr)
            return 1
    if not args.dry_run:
        print(f"sweep done: {len(plan)} runs in {out}; tables and curves: python tools/report.py {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
