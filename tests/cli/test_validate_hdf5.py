"""A damaged dataset is found by tools/validate_hdf5.py (every chunk read back), and named by file, demo and key
by the validator, the loader and train.py alike."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO
from tests.data.test_robot_hdf5 import make_episode, write
from visual_lps.data import robot_hdf5
from visual_lps.data.robot_data import load_robot_data
from visual_lps.data.robot_hdf5 import DatasetFormatError, validate_hdf5

DAMAGED = "data/demo_1/obs/front_image row 4: cannot be read, the file is damaged"


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/validate_hdf5.py", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=30)


def corrupt_chunk(path: Path, key: str, row: int) -> None:
    """Flip every byte of the gzip-compressed chunk holding `row` of `key`, in place on disk."""
    with h5py.File(path) as f:
        dataset = f[key]
        assert dataset.compression == "gzip" and dataset.chunks[0] == 1
        chunk = dataset.id.get_chunk_info_by_coord((row, 0, 0, 0))
    data = bytearray(path.read_bytes())
    start, stop = chunk.byte_offset, chunk.byte_offset + chunk.size
    data[start:stop] = bytes(b ^ 0xFF for b in data[start:stop])
    path.write_bytes(bytes(data))


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """Three demos, valid_fraction 0 (all of them in mask/train); demo_1's front camera frame 4 corrupted."""
    path = tmp_path / "robot.hdf5"
    write(path, [make_episode(8, seed=i) for i in range(3)], valid_fraction=0.0)
    corrupt_chunk(path, "data/demo_1/obs/front_image", 4)
    with h5py.File(path) as f, pytest.raises(OSError, match="filter returned failure"):
        f["data/demo_1/obs/front_image"][4]  # the damage is real: h5py's own error names neither file nor key
    return path


def test_the_validator_reads_every_chunk_and_names_the_damaged_one(damaged: Path):
    result = validate(damaged)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: {damaged}: not a valid") and DAMAGED in result.stderr
    assert "valid\n" not in result.stdout


def test_frames_are_read_back_a_block_at_a_time(damaged: Path, monkeypatch: pytest.MonkeyPatch):
    """Blocks of 3 frames: the damaged frame 4 fails its block [3, 6), and the row at fault is still named."""
    monkeypatch.setattr(robot_hdf5, "READ_BLOCK_BYTES", 3 * 12 * 16 * 3)
    reads = []
    original = h5py.Dataset.read_direct
    monkeypatch.setattr(h5py.Dataset, "read_direct", lambda self, out, source_sel, dest_sel:
                        reads.append((self.name, out.shape[0])) or original(self, out, source_sel, dest_sel))
    with pytest.raises(DatasetFormatError, match=DAMAGED):
        validate_hdf5(damaged, read_everything=True)
    assert ("/data/demo_0/obs/front_image", 3) in reads
    assert max(rows for name, rows in reads if name.endswith("front_image")) == 3


def test_a_progress_bar_shows_on_large_files(damaged: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture):
    write(damaged, [make_episode(8, seed=i) for i in range(3)], valid_fraction=0.0)  # undamaged again
    monkeypatch.setattr(sys, "argv", ["validate_hdf5.py", str(damaged)])
    runpy.run_path(str(REPO / "tools" / "validate_hdf5.py"), run_name="__main__")
    assert "reading robot.hdf5" not in capsys.readouterr().err
    monkeypatch.setattr(robot_hdf5, "PROGRESS_MIN_BYTES", 0)
    runpy.run_path(str(REPO / "tools" / "validate_hdf5.py"), run_name="__main__")
    out, err = capsys.readouterr()
    assert "reading robot.hdf5:" in err and "0/3 [" in err and ": valid" in out


def test_loading_a_damaged_file_names_file_demo_and_key(damaged: Path):
    with pytest.raises(ValueError, match=f"^{damaged}: data/demo_1/obs/front_image: cannot be read, the file is"):
        load_robot_data(damaged, cache="ram")  # read_all reads a demo at once: no row to name
    on_disk = load_robot_data(damaged, cache="none")  # rows are read when a batch needs them
    on_disk.observations["front_image"][np.array([0, 3])]
    with pytest.raises(ValueError, match=f"^{damaged}: {DAMAGED}"):
        on_disk.observations["front_image"][np.array([0, 8 + 4])]


@pytest.mark.parametrize("cache", ["ram", "none"])
def test_train_py_names_a_damaged_chunk_in_one_error_line(tmp_path: Path, cache: str):
    """Read while loading (ram), or by a batch while training (none: the run stops, naming the file)."""
    damaged = tmp_path / "robot.hdf5"
    write(damaged, [make_episode(8, seed=i) for i in range(3)], valid_fraction=0.0)
    corrupt_chunk(damaged, "data/demo_1/obs/front_image", 0)  # the first row of a demo: every chunk start reads it
    result = subprocess.run([sys.executable, "train.py", "--task", "robot", "--dataset", str(damaged), "--out",
                             str(tmp_path / "run"), "--eval-episodes", "0", "--data-cache", cache,
                             "--steps", "40", "--batch-size", "16", "--prior-hidden-dims", "16",
                             "--critic-hidden-dims", "16", "--actor-hidden-dims", "16", "--no-progress"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {damaged}: data/demo_1/obs/front_image" in result.stderr and "cannot be read" in result.stderr


def test_mask_names_that_are_not_text_are_named(tmp_path: Path):
    path = tmp_path / "robot.hdf5"
    write(path, [make_episode(6, seed=i) for i in range(3)], valid_fraction=0.34)
    with h5py.File(path, "a") as f:
        del f["mask/train"]
        f["mask"].create_dataset("train", data=np.array([b"demo_0", b"\xff\xfe_1"]))
    result = validate(path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "mask/train: entry 1 (b'\\xff\\xfe_1') is not UTF-8 text" in result.stderr
    with pytest.raises(ValueError, match=rf"^{path}: mask/train: entry 1 .* is not UTF-8 text"):
        load_robot_data(path)


def test_a_fifo_or_device_is_refused_without_waiting(tmp_path: Path):
    fifo = tmp_path / "robot.hdf5"
    os.mkfifo(fifo)
    result = validate(fifo)  # opening a FIFO for reading would wait for a writer forever
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == f"error: {fifo}: not a regular file (a folder, FIFO or device is no HDF5 dataset)\n"
    with pytest.raises(DatasetFormatError, match="/dev/null: not a regular file"):
        validate_hdf5("/dev/null")
    with pytest.raises(DatasetFormatError, match="missing.hdf5: no such file"):
        validate_hdf5(tmp_path / "missing.hdf5")
