"""Converters from teleoperation logs to the HDF5 dataset format; `tools/convert_teleop.py` runs them.

Each format is a module with:
- `count_episodes(src, options) -> int` (for the progress bar),
- `read_episodes(src, options) -> Iterator[Episode]`,
- `source_facts(src, options) -> dict` (control rate, action space, anything else for `env_args`).
Modules are imported on demand, so a format's libraries (PyAV, pyarrow, rosbags) load only when used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

FORMATS = ("droid", "lerobot", "rosbag", "folder")


def get_converter(name: str) -> ModuleType:
    if name not in FORMATS:
        raise ValueError(f"--format {name!r}: choose one of {', '.join(FORMATS)}")
    return importlib.import_module(f"visual_lps.data.converters.{name}")
