"""Smoke tests that launch the real scripts (accelerate launch train.py, tools/evaluate.py) with tiny budgets."""

import subprocess
import sys
from pathlib import Path

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
                     "--video", str(video), "--video-size", "32")
    assert "step_00000009" in evaluation.stdout and "success rate" in evaluation.stdout
    assert video.stat().st_size > 0


def test_missing_dataset_fails_fast_with_the_generate_command(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "train.py", "--task", "puzzle-4x4", "--dataset-dir", str(tmp_path), "--out",
         str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "python tools/generate_ogbench.py --env puzzle-4x4-play-v0" in result.stderr


def test_visual_task_trains_through_accelerate_and_evaluates_on_camera_frames(tmp_path: Path):
    from visual_lps.data.ogbench_generation import generate

    data_dir = tmp_path / "data"
    generate("visual-cube-single-play-v0", data_dir, episodes=2, seed=0, max_episode_steps=25, progress=False)
    out = tmp_path / "run"
    run(str(BIN / "accelerate"), "launch", "train.py", "--task", "visual-cube", "--dataset-dir", str(data_dir),
        "--out", str(out), *TINY_NETS, "--steps", "3", "--save-every", "3", "--log-every", "3",
        "--eval-episodes", "0")
    saved = (out / "config.yaml").read_text()
    assert "encoder: impala_small" in saved and "frame_stack: 3" in saved
    video = tmp_path / "visual.mp4"
    evaluation = run(sys.executable, "tools/evaluate.py", "--checkpoint", str(out), "--episodes", "1",
                     "--max-episode-steps", "20", "--video", str(video))
    assert "visual-cube-single-singletask-task1-v0" in evaluation.stdout
    assert "(20 frames)" in evaluation.stdout and video.stat().st_size > 0
