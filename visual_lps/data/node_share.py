"""Observations held once per machine, not once per process.

With several training processes on one node, the first of them (local rank 0) loads each large array into
a file in /dev/shm, a memory-backed file system, and every process maps that file: the pages are shared, so
a node holds one copy of the frames whatever its number of GPUs. The other processes never read the array
from the dataset at all. The files are unlinked as soon as every process has mapped them (the mappings stay
valid), so nothing is left behind once training starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from visual_lps.files import atomic_write

SHARED_ROOT = Path("/dev/shm")


class NodeShare:
    """Arrays loaded by local rank 0 and mapped by every local process. Call `array` in the same order on every
    process, local rank 0 first (the trainer loads data under `local_main_process_first`), then `release` on
    local rank 0 once all processes have called it (after a barrier)."""

    def __init__(self, tag: str, local_rank: int, local_processes: int, root: Path = SHARED_ROOT):
        self.tag, self.local_rank = tag, local_rank
        self.root = Path(root)
        self.enabled = local_processes > 1 and self.root.is_dir() and os.access(self.root, os.W_OK)
        self.paths: list[Path] = []

    def array(self, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        """`load()` on local rank 0, shared with the other local processes (which never call `load`)."""
        if not self.enabled:
            return load()
        path = self.root / f"visual-lps-{self.tag}-{key}.npy"
        self.paths.append(path)
        if self.local_rank == 0:
            values = load()
            with atomic_write(path) as written:
                shared = np.lib.format.open_memmap(written, mode="w+", dtype=values.dtype, shape=values.shape)
                shared[...] = values
                shared.flush()
                del shared
        elif not path.exists():
            raise RuntimeError(f"{path}: the first process on this node did not share '{key}' (was it loaded "
                               f"first, under local_main_process_first?)")
        # Writable mapping of the shared pages (torch refuses read-only arrays); nothing writes to it.
        return np.load(path, mmap_mode="r+")

    def holds(self, key: str) -> bool:
        """Whether local rank 0 shared `key`: the other processes follow its choices (what to cache in RAM)."""
        return self.enabled and (self.root / f"visual-lps-{self.tag}-{key}.npy").exists()

    @property
    def follows(self) -> bool:
        """True on the processes that map what local rank 0 loaded."""
        return self.enabled and self.local_rank != 0

    def describe(self) -> str:
        if not self.enabled or not self.paths:
            return ""
        return f"; one copy on this node, mapped by every local process ({SHARED_ROOT})"

    def release(self) -> None:
        """Unlink the files (local rank 0, once every process has mapped them): memory is freed with the last
        mapping, at the end of training."""
        if self.local_rank == 0:
            for path in self.paths:
                path.unlink(missing_ok=True)
