"""The sweep (visual_lps/cli/sweep.py, run as tools/sweep.py) runs a grid of real train.py runs and goes on where
it stopped; the report (tools/report.py) turns their logs into a table and learning curves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_train import run
from visual_lps.cli.report import main as report_main
from visual_lps.cli.report import read_runs


def sweep(tiny_cube_dir: Path, out: Path, steps: int, *extra: str, agents: str = "meanflow-bc,lps",
          seeds: str = "0,1") -> subprocess.CompletedProcess:
    return run(sys.executable, "tools/sweep.py", "--tasks", "cube-single", "--agents", agents,
               "--seeds", seeds, "--steps", str(steps), "--out", str(out), *extra, "--",
               "--dataset-dir", str(tiny_cube_dir), "--prior-hidden-dims", "32,32", "--batch-size", "16",
               "--no-progress", "--eval-every", "1", "--eval-episodes", "1", "--save-every", "1", "--log-every", "1")


def test_sweep_runs_the_grid_skips_finished_runs_resumes_the_others_and_reports(tiny_cube_dir: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    planned = sweep(tiny_cube_dir, out, 1, "--dry-run")
    assert planned.stdout.count(": start ->") == 4 and not out.exists()

    sweep(tiny_cube_dir, out, 1, "--jobs", "2")
    folders = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/seed*"))
    assert folders == ["cube-single/lps/seed0", "cube-single/lps/seed1", "cube-single/meanflow-bc/seed0",
                       "cube-single/meanflow-bc/seed1"]
    assert sweep(tiny_cube_dir, out, 1).stdout.count("skip (finished)") == 4
    longer = sweep(tiny_cube_dir, out, 2, agents="meanflow-bc", seeds="0")
    assert longer.stdout.count(": resume ->") == 1 and "--resume" in longer.stdout
    assert (out / "cube-single/meanflow-bc/seed0/checkpoints/step_00000002").is_dir()

    report = run(sys.executable, "tools/report.py", str(out), "--steps", "1,2")
    results = (out / "report" / "results.md").read_text()
    assert "at step 1:" in results and "at step 2:" in results and "| task | lps | meanflow-bc | paper, LPS |" in results
    first, second = [line for line in results.splitlines() if line.startswith("| cube-single task1 |")]
    assert first.endswith("| 95 |") and first.count("(2)") == 2  # two seeds per agent, the published LPS number
    assert second.count("(1)") == 1 and "| - |" in second  # at step 2: meanflow-bc seed 0 only, no LPS run got there
    curve = out / "report" / "curves_cube-single_task1.png"
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "results.md" in report.stdout

    again = subprocess.run([sys.executable, "tools/report.py", str(out)], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 1 and "results.md" in again.stderr and "--overwrite" in again.stderr


def test_bad_values_are_named(tmp_path: Path):
    def fails(script: str, *args: str) -> str:
        result = subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True)
        assert result.returncode != 0
        return result.stderr

    assert "'cube-sngle': choose from" in fails("tools/sweep.py", "--tasks", "cube-sngle", "--steps", "1")
    assert "'sac': choose from" in fails("tools/sweep.py", "--tasks", "cube-single", "--agents", "sac", "--steps", "1")
    assert "--steps must be at least 1" in fails("tools/sweep.py", "--tasks", "cube-single", "--steps", "0")
    assert "--jobs must be at least 1" in fails("tools/sweep.py", "--tasks", "cube-single", "--steps", "1", "--jobs", "0")
    assert "invalid comma-separated int list" in fails("tools/sweep.py", "--tasks", "cube-single", "--seeds", "a",
                                                       "--steps", "1")
    assert "no such folder" in fails("tools/report.py", str(tmp_path / "missing"))
    assert "steps must be positive" in fails("tools/report.py", str(tmp_path), "--steps", "0")
    assert "no evaluated runs" in fails("tools/report.py", str(tmp_path))


def test_a_stop_signal_reaches_every_run_under_way_which_checkpoint_and_resume(tiny_cube_dir: Path, tmp_path: Path):
    import signal
    import time

    out = tmp_path / "sweep"
    grid = [sys.executable, "tools/sweep.py", "--tasks", "cube-single", "--agents", "meanflow-bc", "--seeds", "0,1",
            "--steps", "100000", "--jobs", "2", "--out", str(out)]
    command = [*grid, "--", "--dataset-dir", str(tiny_cube_dir), "--prior-hidden-dims", "32,32", "--batch-size", "16",
               "--no-progress", "--eval-episodes", "0", "--save-every", "100000", "--log-every", "1", "--no-compile"]
    sweep_process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(out.glob("*/*/seed*/tb/events.*"))) < 2 and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # both runs are training
    sweep_process.send_signal(signal.SIGTERM)
    _, stderr = sweep_process.communicate(timeout=120)
    assert sweep_process.returncode == 143, stderr[-2000:]
    assert "run the same command to go on" in stderr
    for seed in (0, 1):
        assert list((out / "cube-single" / "meanflow-bc" / f"seed{seed}" / "checkpoints").glob("step_*"))
    planned = run(*grid, "--dry-run")  # the same sweep, listed: both runs would be resumed
    assert planned.stdout.count(": resume ->") == 2


def load_sweep_module():
    from visual_lps.cli import sweep

    return sweep


RECORDER = """import json, os, sys, time
start = time.time(); time.sleep(float(sys.argv[2]))
json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": os.environ.get("OMP_NUM_THREADS"),
           "start": start, "end": time.time()}, open(sys.argv[1], "w"))
"""


def recorded_sweep(monkeypatch, tmp_path: Path, visible: int, *args: str, seconds: float = 0.6) -> list[dict]:
    """The sweep's real scheduler, each run replaced by a process that records the environment it got."""
    sweep_tool = load_sweep_module()
    monkeypatch.setattr(sweep_tool, "visible_gpus", lambda: visible)
    log = tmp_path / "log"
    log.mkdir(parents=True)

    def command(run, steps, state, extra):
        name = f"{run.task}-{run.agent}-{run.seed}"
        return [sys.executable, "-c", RECORDER, str(log / f"{name}.json"), str(seconds)]

    monkeypatch.setattr(sweep_tool.SweepRun, "command", command)
    assert sweep_tool.main(["--out", str(tmp_path / "sweep"), "--steps", "1", *args]) == 0
    return [json.loads(p.read_text()) | {"name": p.stem} for p in sorted(log.iterdir())]


def most_at_once(runs: list[dict], share) -> dict[str, float]:
    """The largest summed share of each GPU at any moment."""
    peak: dict[str, float] = {}
    for one in runs:
        at = one["start"]
        load = sum(share(r) for r in runs if r["gpu"] == one["gpu"] and r["start"] <= at < r["end"])
        peak[one["gpu"]] = max(peak.get(one["gpu"], 0.0), load)
    return peak


def test_sweep_places_runs_on_gpus_several_state_runs_per_card_each_seeing_only_its_own(
    monkeypatch, tmp_path: Path
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the sweep itself sees a selection: runs get the real ids
    runs = recorded_sweep(monkeypatch, tmp_path, 2, "--tasks", "cube-single,visual-cube", "--agents", "lps",
                          "--seeds", "0,1,2,3")
    assert len(runs) == 8 and {r["gpu"] for r in runs} == {"5", "7"}
    share = lambda r: 1.0 if r["name"].startswith("visual") else 0.25  # noqa: E731
    assert all(load <= 1.0 for load in most_at_once(runs, share).values())
    state = [r for r in runs if not r["name"].startswith("visual")]
    assert max(r["start"] for r in state) < min(r["end"] for r in state)  # the four state runs ran at once
    visual = [r for r in runs if r["name"].startswith("visual")]
    for a in visual:  # a run from pixels has its card to itself
        assert not any(b is not a and b["gpu"] == a["gpu"] and b["start"] < a["end"] and a["start"] < b["end"]
                       for b in runs)
    expected_threads = str(max((os.cpu_count() or 1) // 8, 1))  # up to 4 state runs on each of 2 cards
    assert {r["threads"] for r in runs} == {expected_threads}


def test_sweep_uses_every_visible_gpu_by_default_and_the_cpu_without_one(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runs = recorded_sweep(monkeypatch, tmp_path / "gpus", 3, "--tasks", "cube-single", "--agents", "lps",
                          "--seeds", "0,1,2", "--runs-per-gpu", "1")
    assert sorted(r["gpu"] for r in runs) == ["0", "1", "2"]
    assert max(r["start"] for r in runs) < min(r["end"] for r in runs)  # one run per card, all three at once
    cpu = recorded_sweep(monkeypatch, tmp_path / "cpu", 0, "--tasks", "cube-single", "--agents", "lps",
                         "--seeds", "0,1", seconds=0.1)
    assert [r["gpu"] for r in cpu] == [None, None] and cpu[0]["end"] <= cpu[1]["start"]  # one at a time
    none = recorded_sweep(monkeypatch, tmp_path / "none", 2, "--tasks", "cube-single", "--agents", "lps",
                          "--seeds", "0", "--gpus", "none", seconds=0.1)
    assert [r["gpu"] for r in none] == [None]


def test_sweep_gpu_flags_bad_values_are_named(monkeypatch, capsys):
    sweep_tool = load_sweep_module()
    monkeypatch.setattr(sweep_tool, "visible_gpus", lambda: 2)
    for args, message in [(["--gpus", "0,0"], "must be distinct"), (["--gpus", "a"], "comma-separated GPU indices"),
                          (["--gpus", "2"], "sees 2 GPU(s), 0 to 1"), (["--runs-per-gpu", "0"], "at least 1")]:
        with pytest.raises(SystemExit):
            sweep_tool.main(["--tasks", "cube-single", "--steps", "1", "--dry-run", *args])
        assert message in capsys.readouterr().err


def test_a_sweep_skips_a_run_another_process_holds_and_a_second_sweep_on_its_out_is_refused(
    monkeypatch, tmp_path: Path, capsys
):
    from visual_lps.runs.lock import RunLock

    sweep_tool = load_sweep_module()
    monkeypatch.setattr(sweep_tool, "visible_gpus", lambda: 0)
    out = tmp_path / "sweep"
    held = out / "cube-single" / "lps" / "seed0"
    held.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from visual_lps.runs.lock import RunLock; "
                               f"lock = RunLock.acquire({str(held)!r}); print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = []
        monkeypatch.setattr(sweep_tool, "run_all", lambda todo, *args: started.extend(todo) or 0)
        argv = ["--tasks", "cube-single", "--agents", "lps", "--seeds", "0,1", "--steps", "1", "--out", str(out)]
        assert sweep_tool.main(argv) == 0
        printed = capsys.readouterr().out
        assert "seed 0: skip (in use by another process)" in printed and "but for 1 run(s) in use" in printed
        assert [run.seed for run, _ in started] == [1]
        with RunLock.acquire(out):  # another sweep holds OUT
            assert sweep_tool.main(argv) == 1
        assert "is in use by another run: pid" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_report_marks_where_a_run_fine_tuned_online_began(tiny_cube_dir: Path, tmp_path: Path):
    from tests.training.test_online import online_run, scalars
    from visual_lps.cli.train import main as train_main

    runs_dir = tmp_path / "runs"
    assert train_main(online_run(tiny_cube_dir, runs_dir / "online", "lps", "--eval-every", "7",
                                 "--eval-episodes", "1")) == 0
    runs, _ = read_runs(runs_dir)
    assert [run.online_from for run in runs] == [4] and runs[0].steps == [4, 7, 14, 21, 28, 35, 42, 49]
    assert len(scalars(runs_dir / "online", "eval/success_rate")) == 8  # the last update is evaluated once
    assert report_main([str(runs_dir)]) == 0
    assert "fine-tuned online after 4 offline updates" in (runs_dir / "report" / "results.md").read_text()


def test_a_run_stopped_in_its_online_phase_is_resumed_by_the_sweep_not_skipped(tiny_cube_dir: Path, tmp_path: Path):
    import shutil

    from tests.training.test_online import online_run
    from visual_lps.cli.sweep import SweepRun
    from visual_lps.cli.train import main as train_main

    out = tmp_path / "cube-single" / "lps" / "seed0"
    assert train_main(online_run(tiny_cube_dir, out, "lps", "--save-every", "4")) == 0
    assert SweepRun("cube-single", "lps", 0, out).state(4) == "finished"
    shutil.rmtree(sorted((out / "checkpoints").iterdir())[-1])  # the last checkpoint falls mid-way online
    assert SweepRun("cube-single", "lps", 0, out).state(4) == "interrupted"
