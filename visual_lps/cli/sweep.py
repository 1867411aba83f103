"""Run a grid of training runs (tasks x agents x seeds), each a normal run folder, one after the other.

    python tools/sweep.py --tasks cube-single --agents flow-bc,meanflow-bc,lps,qc-fql,dsrl --seeds 0,1 --steps 25000 \
        --out runs/sweep [--dry-run] [-- any other train.py flags]

Runs live in OUT/<task>/<agent>/seed<N>. Run it again and it goes on where it stopped: finished runs (a complete
checkpoint at --steps, and at the end of the online phase where the runs have one) are skipped, interrupted ones
resumed (`train.py --resume`), the others started.
`--jobs N` runs N at once, the CPU threads split between them. A run that fails stops the sweep once the
runs under way end (exit 1); SIGINT or SIGTERM reaches every run under way, each checkpoints and stops, and the
sweep exits 130 or 143. Read the results with tools/report.py.

GPUs: where CUDA is present, runs are placed on every visible GPU (`--gpus 0,1,...` picks some, `--gpus none`
keeps to the CPU), each run seeing only its own (`CUDA_VISIBLE_DEVICES`). A run from states uses a sliver of a
card, so several share one: by default 4 state runs or 1 run from pixels per GPU (`--runs-per-gpu N` sets it
for every run). Runs start in the order listed, each on the least loaded GPU with room for it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from visual_lps.agents import AGENTS
from visual_lps.runs.checkpoints import latest_complete_checkpoint
from visual_lps.runs.folder import CONFIG, RunFolder
from visual_lps.runs.lock import RunFolderInUse, RunLock, RunLockError
from visual_lps.stop_signals import StopSignalFlag
from visual_lps.tasks import TASKS

STATE_RUNS_PER_GPU = 4
"""runs from states sharing one GPU by default (a state update uses a sliver of a card; pixels fill it)"""


@dataclass(frozen=True)
class SweepRun:
    task: str
    agent: str
    seed: int
    out: Path

    def state(self, steps: int) -> str:
        """'finished', 'in use' (by a run of another process), 'interrupted' (resumable) or 'new'."""
        if self.out.is_dir():
            try:
                RunLock.acquire(self.out).release()
            except RunFolderInUse:
                return "in use"
        checkpoint, _ = latest_complete_checkpoint(self.out) if RunFolder(self.out).checkpoints.is_dir() else (None, [])
        if checkpoint is not None and int(checkpoint.name.removeprefix("step_")) >= steps and online_done(checkpoint):
            return "finished"
        return "interrupted" if checkpoint is not None else "new"

    def command(self, steps: int, state: str, extra: list[str]) -> list[str]:
        train = [sys.executable, "-m", "visual_lps.cli.train"]
        if state == "interrupted":
            return [*train, "--resume", "--out", str(self.out), "--steps", str(steps)]
        # A folder with a config but no complete checkpoint holds nothing worth keeping: start it again.
        again = ["--overwrite"] if RunFolder(self.out).config.exists() else []
        return [*train, "--task", self.task, "--agent", self.agent, "--seed", str(self.seed), "--steps", str(steps),
                "--out", str(self.out), *again, *extra]


def online_done(checkpoint: Path) -> bool:
    """Whether the run's online phase (`--online-steps` in its config; none: done) is over at `checkpoint`."""
    from visual_lps.training.checkpointing import load_counters

    train = (yaml.safe_load((checkpoint / CONFIG).read_text()) or {}).get("train", {})
    return load_counters(checkpoint, ("env_steps",))["env_steps"] >= int(train.get("online_steps") or 0)


def package_path() -> str:
    """PYTHONPATH for the runs: the folder holding this package first, so that `python -m visual_lps.cli.train`
    finds the same code from any working directory, installed or not."""
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])


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


def parse_gpus(text: str) -> list[int]:
    """'none' (or empty) -> no GPU; '0,2' -> [0, 2]."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        gpus = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated GPU indices, or 'none'") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"{text!r}: GPU indices must be distinct and non-negative")
    return gpus


parse_gpus.__name__ = "GPU list"


def visible_gpus() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_ids(gpus: list[int]) -> list[str]:
    """What a child's CUDA_VISIBLE_DEVICES names for each of our indices (ours may already be a selection)."""
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    if parent is None:
        return [str(g) for g in gpus]
    names = [name.strip() for name in parent.split(",") if name.strip()]
    return [names[g] if g < len(names) else str(g) for g in gpus]


@dataclass
class Placement:
    """Where runs go: GPUs (a share of a card per run) or the CPU, `jobs` at once at most."""

    gpus: list[str]
    """CUDA_VISIBLE_DEVICES value of each GPU the sweep places runs on (empty: the CPU)"""
    runs_per_gpu: int | None
    """runs sharing one GPU; None: STATE_RUNS_PER_GPU runs from states, 1 from pixels"""
    jobs: int | None
    """runs at once at most (None: as many as the GPUs hold; 1 without GPUs)"""
    load: dict[str, float] = field(default_factory=dict)
    """the share of each GPU the runs under way use"""

    def share(self, run: SweepRun) -> float:
        if self.runs_per_gpu is not None:
            return 1 / self.runs_per_gpu
        return 1.0 if TASKS[run.task].from_pixels else 1 / STATE_RUNS_PER_GPU

    def concurrency(self, runs: list[SweepRun]) -> int:
        """Runs at once at most, for splitting the CPU threads."""
        if not self.gpus:
            return self.jobs or 1
        most = len(self.gpus) * max(round(1 / self.share(run)) for run in runs) if runs else 1
        return min(most, self.jobs) if self.jobs else most

    def take(self, run: SweepRun, running: int) -> dict[str, str] | None:
        """The environment `run` starts with (its GPU taken), or None if it has to wait."""
        if running >= (self.jobs or (1 if not self.gpus else sys.maxsize)):
            return None
        if not self.gpus:
            return {}
        need = self.share(run)
        gpu = min(self.gpus, key=lambda g: (self.load.get(g, 0.0), self.gpus.index(g)))
        if self.load.get(gpu, 0.0) + need > 1 + 1e-9:
            return None
        self.load[gpu] = self.load.get(gpu, 0.0) + need
        return {"CUDA_VISIBLE_DEVICES": gpu}

    def release(self, run: SweepRun, env: dict[str, str]) -> None:
        if "CUDA_VISIBLE_DEVICES" in env:
            self.load[env["CUDA_VISIBLE_DEVICES"]] -= self.share(run)

    def describe(self, runs: list[SweepRun]) -> str:
        if not self.gpus:
            return f"on the CPU, {self.jobs or 1} run(s) at once"
        per = (f"{self.runs_per_gpu} runs" if self.runs_per_gpu else
               f"{STATE_RUNS_PER_GPU} runs from states or 1 from pixels")
        cap = f", {self.jobs} at once at most" if self.jobs else ""
        return f"on GPU(s) {','.join(self.gpus)} (CUDA_VISIBLE_DEVICES), {per} per GPU{cap}"


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
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once at most, the CPU threads split between them (default: 1 on the CPU; "
                             "with GPUs as many as they hold)")
    parser.add_argument("--gpus", type=parse_gpus, default=None,
                        help="GPUs to place runs on, as this process numbers them (e.g. 0,1), or 'none' for the "
                             "CPU (default: every visible GPU when CUDA is present)")
    parser.add_argument("--runs-per-gpu", type=int, default=None,
                        help=f"runs sharing one GPU (default: {STATE_RUNS_PER_GPU} runs from states, 1 from pixels)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and what would be done, run nothing")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.runs_per_gpu is not None and args.runs_per_gpu < 1:
        parser.error("--runs-per-gpu must be at least 1")
    visible = visible_gpus()
    gpus = list(range(visible)) if args.gpus is None else args.gpus
    if visible and any(g >= visible for g in gpus):
        parser.error(f"--gpus {','.join(map(str, gpus))}: this process sees {visible} GPU(s), 0 to {visible - 1}")
    if gpus and not visible:
        print("warning: --gpus: no CUDA device is visible here; each run gets the CUDA_VISIBLE_DEVICES asked for",
              file=sys.stderr)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")

    try:  # one sweep at a time in OUT (its runs each hold their own folder's lock while they train)
        lock = None if args.dry_run else RunLock.acquire(out)
    except RunLockError as e:
        print(f"error: --out: {e}", file=sys.stderr)
        return 1
    try:
        return sweep(args, out, extra, Placement(device_ids(gpus), args.runs_per_gpu, args.jobs))
    finally:
        if lock is not None:
            lock.release()


def sweep(args: argparse.Namespace, out: Path, extra: list[str], placement: Placement) -> int:
    runs = [SweepRun(task, agent, seed, out / task / agent / f"seed{seed}")
            for task in args.tasks for agent in args.agents for seed in args.seeds]
    plan = [(run, run.state(args.steps)) for run in runs]
    verbs = {"finished": "skip (finished)", "in use": "skip (in use by another process)", "interrupted": "resume",
             "new": "start"}
    for i, (run, state) in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {run.task} {run.agent} seed {run.seed}: {verbs[state]} -> {run.out}", flush=True)
    todo = [(run, state) for run, state in plan if state not in ("finished", "in use")]
    print(f"placement: {placement.describe([run for run, _ in todo])}", flush=True)
    if args.dry_run:
        return 0
    code = run_all(todo, args.steps, extra, placement)
    busy = sum(state == "in use" for _, state in plan)
    if code == 0 and busy:
        print(f"sweep done but for {busy} run(s) in use by another process: run the same command once they end")
    elif code == 0:
        print(f"sweep done: {len(plan)} runs in {out}; tables and curves: python tools/report.py {out}")
    return code


def run_all(todo: list[tuple[SweepRun, str]], steps: int, extra: list[str], placement: Placement) -> int:
    """Run `todo` in order, as many at a time as `placement` allows; the first failure or stop signal lets the
    runs under way finish (a signal is passed on to them) and starts no more."""
    at_once = placement.concurrency([run for run, _ in todo])
    threads = max((os.cpu_count() or 1) // at_once, 1)
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if at_once > 1 else {}) | {"PYTHONPATH": package_path()}
    running: dict[subprocess.Popen, tuple[SweepRun, dict[str, str]]] = {}

    def forward(signum: int) -> None:
        for process in running:
            process.send_signal(signum)

    failed: list[str] = []
    with StopSignalFlag(on_signal=forward) as stop:
        queue = list(todo)
        while queue or running:
            while queue and stop.signum is None and not failed:
                run, state = queue[0]
                device = placement.take(run, len(running))
                if device is None:
                    break
                queue.pop(0)
                command = run.command(steps, state, extra)
                print("$", shlex.join([f"{k}={v}" for k, v in device.items()] + command), flush=True)
                running[subprocess.Popen(command, env=env | device)] = (run, device)
            if not running:
                break
            time.sleep(0.2)
            for process in [p for p in running if p.poll() is not None]:
                run, device = running.pop(process)
                placement.release(run, device)
                if process.returncode not in (0, 130, 143):
                    failed.append(f"{run.out} (exit {process.returncode})")
    if stop.signum is not None:
        print("sweep stopped: the runs under way checkpointed; run the same command to go on", file=sys.stderr)
        return 128 + stop.signum
    if failed:
        print(f"error: {', '.join(failed)} failed; the sweep stopped there", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
