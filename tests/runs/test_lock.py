"""The run-folder lock, with real processes: a second taker is refused naming the holder, a killed holder's lock
is taken over and said, a folder made for nothing is not left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from visual_lps.runs.lock import LOCK_FILE, RunFolderInUse, RunLock, RunLockError

HOLDER = """
import sys
from visual_lps.runs.lock import RunLock
lock = RunLock.acquire(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # held until the test closes stdin (or kills this process)
lock.release()
"""


def holder(folder: Path) -> subprocess.Popen:
    """Another process holding the lock of `folder`."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_is_refused_naming_the_holder_until_it_releases(tmp_path: Path):
    process = holder(tmp_path)
    try:
        with pytest.raises(RunFolderInUse, match=f"{tmp_path} is in use by another run: pid {process.pid} on host "
                                                 f"{socket.gethostname()} "):
            RunLock.acquire(tmp_path)
    finally:
        process.communicate("", timeout=30)
    assert process.returncode == 0
    with RunLock.acquire(tmp_path) as lock:  # released cleanly: nothing stale to report
        assert lock.taken_over is None
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_the_lock_of_a_killed_process_is_taken_over_and_said(tmp_path: Path):
    process = holder(tmp_path)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    with RunLock.acquire(tmp_path) as lock:
        assert f"taking over the lock left by pid {process.pid} on host {socket.gethostname()}" in lock.taken_over
        assert "is no longer running" in lock.taken_over
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_FILE).read_text()


def test_a_folder_made_by_the_lock_goes_if_nothing_was_written_an_existing_one_stays(tmp_path: Path):
    RunLock.acquire(tmp_path / "new").release()
    assert not (tmp_path / "new").exists()
    with RunLock.acquire(tmp_path / "used"):
        (tmp_path / "used" / "config.yaml").write_text("train: {}")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["config.yaml", LOCK_FILE]
    RunLock.acquire(tmp_path).release()
    assert tmp_path.is_dir()


def test_a_folder_that_cannot_be_made_is_named():
    with pytest.raises(RunLockError, match=r"/proc/visual-lps-run: cannot create the run folder"):
        RunLock.acquire("/proc/visual-lps-run")
