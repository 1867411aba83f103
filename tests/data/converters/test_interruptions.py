"""Conversions that are interrupted, or meet an existing output: nothing is lost and nothing half-written stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO
from tests.data.converters.conftest import assert_fails_cleanly, convert
from tests.data.converters.test_droid import write_trajectory
from tests.data.converters.test_folder import write_episode


@pytest.fixture
def droid_source(tmp_path: Path) -> Path:
    source = tmp_path / "droid"
    for i in range(3):
        write_trajectory(source / "success" / f"traj_{i}" / "trajectory.h5", 12, seed=i)
    return source


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_conversion_removes_its_temporary_file_and_exits_128_plus_signal(tmp_path: Path, sig):
    source = tmp_path / "slow"
    for i in range(40):  # enlarged and gzipped frames: many seconds of work
        write_trajectory(source / "success" / f"traj_{i}" / "trajectory.h5", 60, seed=i)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen([sys.executable, "tools/convert_teleop.py", "--format", "droid", str(source),
                                str(out_dir / "robot.hdf5"), "--resize", "256x256"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out_dir.glob(".robot.hdf5.*.tmp")):  # the writer has started
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and f"interrupted by {sig.name}" in stderr
    assert list(out_dir.iterdir()) == []


def test_a_temporary_file_left_by_a_killed_conversion_is_removed_and_said_so(droid_source: Path, tmp_path: Path):
    out = tmp_path / "robot.hdf5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".robot.hdf5.{int(dead.stdout)}.tmp"  # the pid of a process that has exited
    stale.write_bytes(b"half a file")
    result = convert("--format", "droid", droid_source, out)
    assert result.returncode == 0, result.stderr
    assert f"removed {stale}" in result.stdout and not stale.exists()
    with h5py.File(out) as f:
        assert len(f["data"]) == 3


def test_a_conversion_still_writing_the_same_output_is_not_disturbed(droid_source: Path, tmp_path: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    busy = out_dir / f".robot.hdf5.{os.getpid()}.tmp"  # this test's process is alive
    busy.write_bytes(b"being written")
    result = convert("--format", "droid", droid_source, out_dir / "robot.hdf5")
    assert result.returncode != 0 and "another conversion (process" in result.stderr
    assert busy.read_bytes() == b"being written" and not (out_dir / "robot.hdf5").exists()


def test_an_existing_output_is_replaced_only_with_overwrite(droid_source: Path, tmp_path: Path):
    out = tmp_path / "robot.hdf5"
    out.write_text("not a dataset, and not yours to lose")
    result = convert("--format", "droid", droid_source, out)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{out} exists: give --overwrite" in result.stderr
    assert out.read_text() == "not a dataset, and not yours to lose"
    assert convert("--format", "droid", droid_source, out, "--overwrite").returncode == 0
    with h5py.File(out) as f:
        assert len(f["data"]) == 3


def test_an_output_that_is_a_folder_is_refused_before_any_work(droid_source: Path, tmp_path: Path):
    out_dir = tmp_path / "out"
    (out_dir / "robot.hdf5").mkdir(parents=True)
    result = convert("--format", "droid", droid_source, out_dir / "robot.hdf5")
    assert_fails_cleanly(result, out_dir / "robot.hdf5", "robot.hdf5 is a folder")


def test_missing_parent_folders_are_created(droid_source: Path, tmp_path: Path):
    out = tmp_path / "new" / "folder" / "robot.hdf5"
    assert convert("--format", "droid", droid_source, out).returncode == 0
    assert out.is_file()


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_inside_the_source_is_refused_even_with_overwrite(droid_source: Path, tmp_path: Path):
    """A recording replaced by the output is lost, and the next conversion reads the output as a recording."""
    before = tree(droid_source)
    (tmp_path / "link").symlink_to(droid_source)
    recording = droid_source / "success" / "traj_0" / "trajectory.h5"
    for out in (droid_source / "robot.hdf5", recording, tmp_path / "link" / "success" / "robot.hdf5",
                tmp_path / "elsewhere" / ".." / "droid" / "robot.h5"):
        result = convert("--format", "droid", droid_source, out, "--overwrite")
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert f"error: {out}: the output is inside the source {droid_source}" in result.stderr
    assert tree(droid_source) == before
    single = tmp_path / "recording.h5"  # the output equal to a source file
    single.write_bytes(b"a recording")
    result = convert("--format", "droid", single, single, "--overwrite")
    assert "the output is inside the source" in result.stderr and single.read_bytes() == b"a recording"


def test_a_conversion_that_fails_at_the_end_keeps_the_file_it_would_replace(tmp_path: Path):
    """Source rewards with a NaN: the run fails (naming the episode) and the existing OUT stays as it was."""
    src, out_dir = tmp_path / "episodes", tmp_path / "out"
    write_episode(src / "ep0", 5, 0)
    write_episode(src / "ep1", 5, 1)
    rewards = np.load(src / "ep1" / "rewards.npy")
    rewards[2] = np.nan
    np.save(src / "ep1" / "rewards.npy", rewards)
    out_dir.mkdir()
    (out_dir / "robot.hdf5").write_text("yesterday's dataset")
    result = convert("--format", "folder", src, out_dir / "robot.hdf5", "--rewards", "source", "--overwrite")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "ep1: the recorded rewards contain NaN or inf" in result.stderr
    assert tree(out_dir) == {"robot.hdf5": b"yesterday's dataset"}


@pytest.mark.parametrize("flag, value, message", [
    ("--failure-penalty", "nan", "error: --failure-penalty nan: must be a finite number"),
    ("--failure-penalty", "-inf", "error: --failure-penalty -inf: must be a finite number"),
    ("--valid-fraction", "nan", "error: --valid-fraction nan: must be in [0, 1)"),
    ("--resize", "100000x100000", "argument --resize: each side must be in 1..2048, got '100000x100000'"),
    ("--resize", "0x64", "argument --resize: each side must be in 1..2048, got '0x64'"),
])
def test_bad_flag_values_are_refused_before_any_work(droid_source: Path, tmp_path: Path, flag: str, value: str,
                                                     message: str):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "robot.hdf5").write_text("kept")
    result = convert("--format", "droid", droid_source, out_dir / "robot.hdf5", "--overwrite", "--rewards",
                     "step-penalty", f"{flag}={value}")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].endswith(message), result.stderr
    assert "converting" not in result.stderr and tree(out_dir) == {"robot.hdf5": b"kept"}
