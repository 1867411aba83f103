"""The speed benchmark runs (tiny sizes): a benchmark that no longer matches the code is caught here."""

import json
import runpy
import sys

from tests.conftest import REPO


def test_speed_table_prints_a_row_per_measurement(monkeypatch, capsys):
    argv = ["bench/speed.py", "--device", "cpu", "--kinds", "state,visual", "--parts", "update,act",
            "--variants", "eager fp32", "--steps", "1", "--act-calls", "3", "--batch-size", "4"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "bench" / "speed.py"), run_name="__main__")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| update") or
            line.startswith("| act")]
    assert len(rows) == 6, rows  # per agent: one update variant, act eager and compiled
    assert all("steps/s" in row or "p50" in row for row in rows)


def test_gpu_check_writes_its_log_and_table_and_says_what_it_skipped(tmp_path):
    """The harness itself (limits, log, table), on a part that needs nothing: without the JAX reference it is
    skipped, not failed."""
    import os
    import subprocess

    env = os.environ | {"PARTS": "jax", "PYTHON": sys.executable, "DEVICE": "cpu"}
    result = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| part | status | seconds |" in table and "| jax | skipped: " in table
    assert "=== jax (limit 60s)" in (tmp_path / "gpu_check.log").read_text()


def test_online_speed_compares_the_online_loop_with_the_offline_updates(tiny_cube_dir, monkeypatch, capsys):
    argv = ["bench/online_speed.py", "--dataset-dir", str(tiny_cube_dir), "--steps", "30", "--log-every", "10",
            "--collect-steps", "20", "--no-compile"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "bench" / "online_speed.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "| cube-single, utd 1 | offline updates/s " in out and "online env steps/s" in out
    assert "online loop / offline update rate: " in out and "collection's share of an online step: " in out


def test_robot_finetune_measures_blocks_of_episodes_and_the_chunk_latency(tiny_cube_dir, tmp_path, monkeypatch,
                                                                          capsys):
    from visual_lps.training.flags import parse_args
    from visual_lps.training.trainer import train

    run = tmp_path / "run"
    train(*parse_args(["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(run),
                       "--prior-hidden-dims", "32", "--critic-hidden-dims", "32", "--actor-hidden-dims", "32",
                       "--batch-size", "8", "--no-progress", "--no-compile", "--steps", "2", "--eval-episodes", "0"]))
    argv = ["bench/robot_finetune.py", "--checkpoint", str(run), "--out", str(tmp_path / "bench"), "--episodes", "2",
            "--block", "1", "--no-human", "--max-episode-steps", "10", "--latency-episodes", "1", "--rate", "100"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "bench" / "robot_finetune.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "| 2-2 | " in out and "| serving alone (serve_policy.py) | " in out and "learner training | " in out
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [b["episodes"] for b in results["learning"]["policy alone"]["blocks"]] == ["1-1", "2-2"]
    latency = results["latency"]
    assert [latency[name]["chunks"] for name in latency] == [2, 2, 2]  # 10 steps, chunks of 5
    assert "report_p99_ms" not in latency["serving alone (serve_policy.py)"]
    assert latency["fine-tuning server, learner idle"]["periods"] == 10
