"""The speed benchmark runs (tiny sizes): a benchmark that no longer matches the code is caught here."""

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
