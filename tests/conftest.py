"""Shared fixtures: tiny OGBench datasets made by the project's own generator (real envs, real oracles)."""

from __future__ import annotations

from pathlib import Path

import pytest

import visual_lps  # noqa: F401  (sets MUJOCO_GL and the import order that rendering needs)
from visual_lps.data.ogbench_generation import generate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_cube_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cube-single-play-v0 with 3 short episodes (and its -val file) in a temporary folder."""
    out = tmp_path_factory.mktemp("ogbench")
    generate("cube-single-play-v0", out, episodes=3, seed=0, workers=1, max_episode_steps=60, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_visual_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """visual-cube-single-play-v0 with 2 episodes of 25 rendered 64x64 frames (and its -val file)."""
    out = tmp_path_factory.mktemp("ogbench-visual")
    generate("visual-cube-single-play-v0", out, episodes=2, seed=0, workers=1, max_episode_steps=25, progress=False)
    return out


@pytest.fixture(scope="session")
def robot_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LPS run of 2 steps on a small robot HDF5 file (two cameras, 7-D joints, actions in [-2, 3])."""
    from tests.data.test_robot_hdf5 import make_episode, write
    from visual_lps.training.flags import parse_args
    from visual_lps.training.trainer import train

    root = tmp_path_factory.mktemp("policy")
    write(root / "robot.hdf5", [make_episode(n, seed=i) for i, n in enumerate([12, 10, 14])], valid_fraction=0.34)
    train(*parse_args(["--task", "robot", "--dataset", str(root / "robot.hdf5"), "--out", str(root / "run"),
                       "--encoder", "impala_small", "--prior-hidden-dims", "32", "--critic-hidden-dims", "32",
                       "--actor-hidden-dims", "32", "--batch-size", "8", "--no-progress", "--steps", "2",
                       "--eval-episodes", "0", "--save-every", "2", "--log-every", "1", "--data-cache", "none"]))
    return root / "run"
