"""One process at a time in a run folder: an exclusive lock (`fcntl.flock`) on `run.lock` in the folder, held
for the whole run by the one process that writes the folder (the main process of a launch), with a record of
its pid, host and start time. Training takes it, and so must every other writer of a run folder (sweeps, an
online phase, a robot learner): two writers would mix their checkpoints and logs.

A second taker is refused at once, naming the holder. The kernel drops the lock when its holder ends, however
it ends, so a record left by a killed process is taken over (and said); a clean release empties the record.

    with RunLock.acquire(run_dir) as lock:
        ...
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from visual_lps.runs.folder import LOCK as LOCK_FILE


class RunLockError(RuntimeError):
    """The run folder cannot be locked (cannot be created, or its file system has no locks); names the folder."""


class RunFolderInUse(RunLockError):
    """Another process holds the run folder; the message names its pid and host."""


def _describe(record: dict) -> str:
    return f"pid {record.get('pid', '?')} on host {record.get('host', '?')} (since {record.get('started', '?')})"


def _read_record(text: str) -> dict | None:
    """The holder's record, None when there is none; a garbled one is described as unknown."""
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _is_running(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):  # another user's process, or no pid recorded
        return True
    return True


@dataclass
class RunLock:
    """The held lock of `folder`; release it (or leave the `with` block) when the run ends."""

    folder: Path
    fd: int
    created: bool
    """the folder was made by this lock: it is removed on release if nothing but the lock file was written"""
    taken_over: str | None = None
    """a sentence on the earlier holder that ended without releasing the lock, if there was one"""

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        """Lock `folder` (created if missing), or RunFolderInUse at once when another process holds it."""
        folder = Path(folder)
        path = folder / LOCK_FILE
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunLockError(f"{folder}: cannot create the run folder ({e.strerror or e})") from None
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise RunLockError(f"{path}: cannot create the lock file ({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    record = _read_record(path.read_text(errors="replace")) if path.exists() else None
                    holder = _describe(record) if record else "another process"
                    raise RunFolderInUse(f"{folder} is in use by another run: {holder} holds {path}") from None
                raise RunLockError(f"{path}: cannot lock it ({e.strerror or e})") from None
            # A holder that made the folder removes the file on release: lock the file that is there now.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                folder.mkdir(parents=True, exist_ok=True)
            os.close(fd)
        lock = cls(folder, fd, created)
        previous = _read_record(os.pread(fd, 1 << 16, 0).decode(errors="replace"))
        if previous is not None:
            ended = ("is no longer running" if previous.get("host") == socket.gethostname()
                     and not _is_running(previous.get("pid")) else "no longer holds it")
            lock.taken_over = (f"{path}: taking over the lock left by {_describe(previous)}, which ended without "
                               f"releasing it ({ended})")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return lock

    def release(self) -> None:
        """Empty the record (or remove the folder this lock made, if the run wrote nothing), then unlock."""
        if self.fd < 0:
            return
        path = self.folder / LOCK_FILE
        if self.created and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
            path.unlink()
            try:
                self.folder.rmdir()
            except OSError:  # another process wrote to it meanwhile
                pass
        else:
            os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
