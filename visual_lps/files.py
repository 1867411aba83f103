"""Files that appear whole or not at all: written under a temporary name beside their final path, flushed to disk,
then renamed over it, so that a crash or a kill mid-write never leaves a half-written file where a reader looks.

Torch-free: the config, the data layer and the tools use it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path, keep_suffix: bool = False) -> Path:
    """The hidden name beside `path` that this process writes before the rename, `.<name>.<pid>.tmp` (a reader
    skips it; a tool can tell whether the process that left it still runs). `keep_suffix` appends `path`'s
    extension, for writers that choose the format from it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp" + (path.suffix if keep_suffix else ""))


def replace_durably(written: Path, path: Path) -> None:
    """Flush the complete file `written` to disk, rename it over `path`, and flush the folder so that the
    rename survives a power loss too."""
    descriptor = os.open(written, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(written, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextmanager
def atomic_write(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """The temporary path to write (`temporary_path`); on a normal exit it replaces `path`, on an exception it is
    removed and `path` (if any) stays as it was."""
    path = Path(path)
    written = temporary_path(path, keep_suffix)
    try:
        yield written
        replace_durably(written, path)
    finally:
        written.unlink(missing_ok=True)


def write_video_atomic(path: str | Path, frames: list, fps: int) -> None:
    """RGB frames (H, W, 3) as a video whose format the extension names (.mp4), atomically."""
    import imageio.v2 as imageio

    with atomic_write(path, keep_suffix=True) as written:  # imageio picks the format by the extension
        imageio.mimwrite(written, frames, fps=fps, macro_block_size=1)


def write_text_atomic(path: str | Path, text: str) -> None:
    """`Path.write_text`, atomically."""
    with atomic_write(path) as written:
        written.write_text(text)
