"""Converters from teleoperation logs to the HDF5 dataset format; `tools/convert_teleop.py` runs them.

Each format is one `Source` subclass (`common.Source`) in its module: constructed with `(src, options)`, it scans
the source once, then `len(source)` counts the episodes (for the progress bar), `source.facts()` gives what goes
into `env_args` (control rate, action space, ...) and `source.episodes()` yields `Episode`s. A new format is one new
class, named here. Modules are imported on demand, so a format's libraries (PyAV, pyarrow, rosbags) load only when
that format is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from visual_lps.data.converters.common import ConvertOptions, Source

FORMATS = {
    "droid": ("visual_lps.data.converters.droid", "DroidSource"),
    "lerobot": ("visual_lps.data.converters.lerobot", "LeRobotSource"),
    "rosbag": ("visual_lps.data.converters.rosbag", "RosbagSource"),
    "folder": ("visual_lps.data.converters.folder", "FolderSource"),
    "hdf5": ("visual_lps.data.converters.hdf5_files", "HDF5FilesSource"),
}
"""format name -> (module, `Source` class), imported when the format is opened"""


def open_source(name: str, src: Path, options: ConvertOptions) -> Source:
    """The source `src` opened as format `name` (scanned once; raises ConversionError where it is malformed)."""
    if name not in FORMATS:
        raise ValueError(f"--format {name!r}: choose one of {', '.join(FORMATS)}")
    module, cls = FORMATS[name]
    return getattr(importlib.import_module(module), cls)(src, options)
