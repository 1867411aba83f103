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
