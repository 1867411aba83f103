"""Run a grid of training runs (tasks x agents x seeds), each a normal run folder, one after the other.

    python tools/sweep.py --tasks cube-single --agents flow-bc,lps,qc-fql,dsrl --seeds 0,1 --steps 25000 \
        --out runs/sweep [--dry-run] [-- any other train.py flags]

Runs live in OUT/<task>/<agent>/seed<N>. Run it again and it goes on where it stopped: finished runs (a complete
checkpoint at --steps) are skipped, interrupted ones resumed (`train.py --resume`), the others started.
`--jobs N` runs N at once, the CPU threads split between them. A run that fails stops the sweep once the
runs under way end (exit 1); SIGINT or SIGTERM reaches every run under way, each checkpoints and stops, and the
sweep exits 130 or 143. Read the results with tools/report.py.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
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
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, the CPU threads split between them")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and what would be done, run nothing")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")

    runs = [SweepRun(task, agent, seed, out / task / agent / f"seed{seed}")
            for task in args.tasks for agent in args.agents for seed in args.seeds]
    plan = [(run, run.state(args.steps)) for run in runs]
    verbs = {"finished": "skip (finished)", "interrupted": "resume", "new": "start"}
    for i, (run, state) in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {run.task} {run.agent} seed {run.seed}: {verbs[state]} -> {run.out}", flush=True)
    if args.dry_run:
        return 0
    todo = [(run, state) for run, state in plan if state != "finished"]
    code = run_all(todo, args.steps, extra, args.jobs)
    if code == 0:
        print(f"sweep done: {len(plan)} runs in {out}; tables and curves: python tools/report.py {out}")
    return code


def run_all(todo: list[tuple[SweepRun, str]], steps: int, extra: list[str], jobs: int) -> int:
    """Run `todo`, `jobs` at a time; the first failure or stop signal lets the runs under way finish (a signal
    is passed on to them) and starts no more."""
    threads = max((os.cpu_count() or 1) // jobs, 1)
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if jobs > 1 else {})
    running: dict[subprocess.Popen, SweepRun] = {}
    stopped_by: list[int] = []

    def forward(signum, _frame) -> None:
        stopped_by.append(signum)
        for process in running:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed: list[str] = []
    try:
        queue = list(todo)
        while queue or running:
            while queue and len(running) < jobs and not stopped_by and not failed:
                run, state = queue.pop(0)
                command = run.command(steps, state, extra)
                print("$", shlex.join(command), flush=True)
                running[subprocess.Popen(command, cwd=REPO, env=env)] = run
            if not running:
                break
            time.sleep(0.2)
            for process in [p for p in running if p.poll() is not None]:
                run = running.pop(process)
                if process.returncode not in (0, 130, 143):
                    failed.append(f"{run.out} (exit {process.returncode})")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped_by:
        print("sweep stopped: the runs under way checkpointed; run the same command to go on", file=sys.stderr)
        return 128 + stopped_by[0]
    if failed:
        print(f"error: {', '.join(failed)} failed; the sweep stopped there", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
