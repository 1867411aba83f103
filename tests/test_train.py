"""Smoke tests that launch the real scripts (accelerate launch train.py, tools/evaluate.py) with tiny budgets."""

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import REPO

BIN = Path(sys.executable).parent
TINY_NETS = ["--prior-hidden-dims", "32,32", "--critic-hidden-dims", "32,32", "--actor-hidden-dims", "32",
             "--batch-size", "16", "--no-progress"]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([*args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


def test_accelerate_launch_trains_checkpoints_resumes_and_evaluates(tiny_cube_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    common = ["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out), *TINY_NETS,
              "--save-every", "3", "--log-every", "3", "--eval-every", "6", "--eval-episodes", "1"]
    first = run(str(BIN / "accelerate"), "launch", "train.py", *common, "--steps", "6")
    assert "final success rate" in first.stdout
    assert "data: " in first.stdout and "update: eager (uncompiled)" in first.stdout  # where and how, said at start
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003", "step_00000006"]
    assert list((out / "tb").glob("events.out.tfevents.*"))

    second = run(str(BIN / "accelerate"), "launch", "train.py", "--resume", "--out", str(out), "--steps", "9")
    assert "resumed from" in second.stdout and "at step 6" in second.stdout
    ckpts = out / "checkpoints"
    assert (ckpts / "step_00000009").is_dir()
    before = load_file(ckpts / "step_00000006" / "model.safetensors")
    after = load_file(ckpts / "step_00000009" / "model.safetensors")
    assert any(not before[k].equal(after[k]) for k in before)

    video = tmp_path / "eval.mp4"
    evaluation = run(sys.executable, "tools/evaluate.py", "--checkpoint", str(out), "--episodes", "1",
                     "--video", str(video), "--video-size", "32", "--max-episode-steps", "20")
    assert "step_00000009" in evaluation.stdout and "success rate" in evaluation.stdout
    assert "(20 frames)" in evaluation.stdout
    assert video.stat().st_size > 0


def test_update_compiled_by_inductor_trains_as_the_eager_one(tiny_cube_dir: Path, tmp_path: Path):
    """The default on GPUs, here with inductor's CPU code: the same weights as eager, up to float rounding."""
    common = ["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), *TINY_NETS, "--eval-episodes", "0",
              "--steps", "4", "--log-every", "2"]
    compiled = run(sys.executable, "train.py", *common, "--out", str(tmp_path / "compiled"), "--compile")
    assert "update: compiled as one graph" in compiled.stdout
    run(sys.executable, "train.py", *common, "--out", str(tmp_path / "eager"), "--no-compile")
    final = "checkpoints/step_00000004/model.safetensors"
    eager, inductor = load_file(tmp_path / "eager" / final), load_file(tmp_path / "compiled" / final)
    gaps = {k: (eager[k] - inductor[k]).abs().max().item() for k in eager}
    assert all(gap < 1e-4 for gap in gaps.values()), gaps


def test_missing_dataset_fails_fast_with_the_generate_command(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "train.py", "--task", "puzzle-4x4", "--dataset-dir", str(tmp_path), "--out",
         str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "python tools/generate_ogbench.py --env puzzle-4x4-play-v0" in result.stderr


def test_visual_task_trains_through_accelerate_and_evaluates_on_camera_frames(tiny_visual_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    run(str(BIN / "accelerate"), "launch", "train.py", "--task", "visual-cube", "--dataset-dir", str(tiny_visual_dir),
        "--out", str(out), *TINY_NETS, "--steps", "3", "--save-every", "3", "--log-every", "3",
        "--eval-episodes", "0")
    saved = (out / "config.yaml").read_text()
    assert "encoder: impala_small" in saved and "frame_stack: 3" in saved
    video = tmp_path / "visual.mp4"
    evaluation = run(sys.executable, "tools/evaluate.py", "--checkpoint", str(out), "--episodes", "1",
                     "--max-episode-steps", "20", "--video", str(video))
    assert "visual-cube-single-singletask-task1-v0" in evaluation.stdout
    assert "(20 frames)" in evaluation.stdout and video.stat().st_size > 0


def test_robot_hdf5_dataset_trains_with_offline_metrics_and_denormalises_actions(tmp_path: Path):
    import torch

    from tests.data.converters.test_droid import write_trajectory
    from visual_lps.runs.checkpoints import load_agent

    task = tmp_path / "droid_task"
    for i, outcome in enumerate(["success", "success", "failure", "success"]):
        write_trajectory(task / outcome / f"traj_{i}.h5", 14 + i, seed=i)
    dataset = tmp_path / "robot.hdf5"
    run(sys.executable, "tools/convert_teleop.py", "--format", "droid", str(task), str(dataset),
        "--rewards", "step-penalty", "--valid-fraction", "0.25", "--resize", "16x16")
    out = tmp_path / "run"
    result = run(str(BIN / "accelerate"), "launch", "train.py", "--task", "robot", "--dataset", str(dataset),
                 "--out", str(out), *TINY_NETS, "--steps", "4", "--eval-every", "2", "--save-every", "4",
                 "--log-every", "2", "--data-cache", "none")
    assert "valid/action_mse" in result.stdout and "valid/prior_action_mse" in result.stdout
    agent, *_ = load_agent(out)
    weights = load_file(out / "checkpoints" / "step_00000004" / "model.safetensors")
    assert weights["action_high"][:6].max() > 0.9 and weights["action_low"][:6].min() < -0.9  # velocities
    assert weights["encoders.encoder.state_std"].min() > 0 and weights["encoders.encoder.state_mean"].abs().max() > 0
    observations = {"13062452_left_image": torch.zeros(2, 16, 16, 3, dtype=torch.uint8),
                    "24259877_left_image": torch.zeros(2, 16, 16, 3, dtype=torch.uint8),
                    "cartesian_position": torch.zeros(2, 6), "gripper_position": torch.zeros(2, 1)}
    chunk = agent.act(observations)
    assert chunk.shape == (2, 5, 7)
    low, high = weights["action_low"], weights["action_high"]
    assert ((chunk >= low - 1e-5) & (chunk <= high + 1e-5)).all()  # in the robot's units, inside the data's range
    with torch.no_grad():  # act() = the policy's [-1, 1] chunk mapped onto the data's bounds, by hand
        normalised = agent.policy_actions(agent.encode(observations)).view(2, 5, 7)
    assert torch.allclose(chunk, low + (normalised + 1) * (high - low) / 2, atol=1e-6)
    assert (high - low - 2).abs().max() > 0.5 and not torch.allclose(chunk, normalised, atol=1e-3)
    evaluation = subprocess.run([sys.executable, "tools/evaluate.py", "--checkpoint", str(out)], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
    assert evaluation.returncode != 0 and "no simulator" in evaluation.stderr


def test_robot_task_needs_a_valid_dataset(tmp_path: Path):
    def fails(*args: str) -> str:
        result = subprocess.run([sys.executable, "train.py", "--task", "robot", "--out", str(tmp_path / "r"), *args],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        return result.stderr

    assert "--task robot needs --dataset" in fails()
    (tmp_path / "junk.hdf5").write_bytes(b"junk")
    assert "junk.hdf5: cannot open as HDF5" in fails("--dataset", str(tmp_path / "junk.hdf5"))
    assert "no simulator" in fails("--dataset", str(tmp_path / "junk.hdf5"), "--eval-episodes", "3")


def test_a_robot_file_without_held_out_demos_says_so_at_start(tmp_path: Path, capsys):
    from tests.data.converters.test_droid import write_trajectory

    for i in range(3):
        write_trajectory(tmp_path / "droid" / "success" / f"traj_{i}.h5", 12, seed=i)
    dataset = tmp_path / "robot.hdf5"
    from visual_lps.cli.convert_teleop import main as convert_main
    from visual_lps.cli.train import main as train_main

    convert_main(["--format", "droid", str(tmp_path / "droid"), str(dataset), "--valid-fraction", "0",
                  "--resize", "16x16"])
    capsys.readouterr()
    assert train_main(["--task", "robot", "--dataset", str(dataset), "--out", str(tmp_path / "run"), *TINY_NETS,
                       "--steps", "2", "--eval-episodes", "0", "--log-every", "1"]) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and "mask/valid lists no demos" in printed


def test_evaluate_runs_chunks_as_asked_and_refuses_bad_execution_flags(tiny_cube_dir: Path, tmp_path: Path,
                                                                       monkeypatch, capsys):
    from visual_lps.cli.evaluate import main as evaluate_main
    from visual_lps.cli.train import main as train_main

    out = tmp_path / "run"
    assert train_main(["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out), *TINY_NETS,
                       "--steps", "1", "--eval-episodes", "0", "--save-every", "1", "--log-every", "1"]) == 0
    for mode in ("replan", "ensemble"):
        capsys.readouterr()
        evaluate_main(["--checkpoint", str(out), "--episodes", "1", "--max-episode-steps", "10", "--execution", mode,
                       "--replan-every", "2"])
        assert f"({mode}): success rate" in capsys.readouterr().out
    for flags, message in [(["--execution", "often"], "invalid choice: 'often'"),
                           (["--replan-every", "0"], "--replan-every must be at least 1"),
                           (["--ensemble-decay", "-1"], "--ensemble-decay must be at least 0")]:
        monkeypatch.setattr(sys, "argv", ["tools/evaluate.py", "--checkpoint", str(out), *flags])
        with pytest.raises(SystemExit) as bad:
            runpy.run_path(str(REPO / "tools" / "evaluate.py"), run_name="__main__")
        assert bad.value.code == 2 and message in capsys.readouterr().err


def test_what_train_py_cannot_do_is_one_error_line_before_the_first_step(tiny_cube_dir: Path, tmp_path: Path):
    """A batch too large for memory, an --out that cannot be made, a tb/ that cannot be written."""
    from tests.training.test_trainer import mounted_tmpfs
    from visual_lps.training.flags import parse_args
    from visual_lps.training.trainer import train

    def refused(out: Path, *extra: str) -> str:
        with pytest.raises(SystemExit) as stop:
            train(*parse_args(["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out),
                               *TINY_NETS, "--eval-episodes", "0", "--steps", "2", *extra]))
        assert isinstance(stop.value.code, str) and "\n" not in stop.value.code
        return stop.value.code

    assert refused(tmp_path / "big", "--batch-size", "1000000000000").startswith(
        "error: out of memory at step 1 with --batch-size 1000000000000 per process (")
    assert refused(Path("/proc/visual-lps-run")) == ("error: --out /proc/visual-lps-run: cannot create the run folder "
                                                      "(No such file or directory)")
    with mounted_tmpfs(tmp_path / "run" / "tb", "ro,size=64k"):
        (tmp_path / "run" / "config.yaml").write_text("train: {}\n")
        assert refused(tmp_path / "run", "--overwrite") == (f"error: --out {tmp_path / 'run'}: cannot write to "
                                                            f"{tmp_path / 'run' / 'tb'} (Read-only file system)")
    assert (tmp_path / "run" / "config.yaml").read_text() == "train: {}\n"  # refused before --overwrite cleared it
