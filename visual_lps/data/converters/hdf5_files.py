"""Files already in the project's HDF5 format, merged into one: the online episodes a run kept
(`<run>/online/episode_*.hdf5`, see docs/online.md), or any set of such files. Every demo of every file (in name
order) becomes an episode of the output; with `--rewards source` its rewards and terminals are kept as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from visual_lps.data.converters.common import ConversionError, ConvertOptions, Source, select_cameras
from visual_lps.data.robot_hdf5 import (READ_ERRORS, DatasetFormatError, Episode, demo_names, read_dataset,
                                         validate_hdf5)
from visual_lps.observations import IMAGE_SUFFIX


class HDF5FilesSource(Source):
    """A folder of HDF5 files in the project's format (or one such file); opening it validates each."""

    def __init__(self, src: Path, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.files = sorted(self.src.glob("*.hdf5")) if self.src.is_dir() else [self.src]
        if not self.files:
            raise ConversionError(f"{self.src}: no .hdf5 files")
        self.demos: list[tuple[Path, str]] = []
        for path in self.files:
            try:
                validate_hdf5(path, check_values=False)
            except DatasetFormatError as e:
                raise ConversionError(str(e)) from None
            with h5py.File(path, "r") as file:
                self.demos += [(path, name) for name in demo_names(file["data"])]

    def __len__(self) -> int:
        return len(self.demos)

    def facts(self) -> dict:
        return {"files": len(self.files)}

    def episodes(self) -> Iterator[Episode]:
        for path, name in self.demos:
            where = f"{path}: data/{name}"
            try:
                with h5py.File(path, "r") as file:
                    demo = file["data"][name]
                    obs = {key: read_dataset(demo["obs"][key]) for key in demo["obs"]}
                    actions = read_dataset(demo["actions"]).astype(np.float32)
                    rewards = read_dataset(demo["rewards"]).astype(np.float32)
                    terminals = read_dataset(demo["terminals"]).astype(bool)
                    success = bool(demo.attrs.get("success", self.options.default_success))
            except READ_ERRORS as e:
                raise ConversionError(f"{where}: cannot be read ({e})") from None
            images = {k.removesuffix(IMAGE_SUFFIX): v for k, v in obs.items() if k.endswith(IMAGE_SUFFIX)}
            proprio = {k: v for k, v in obs.items() if not k.endswith(IMAGE_SUFFIX)}
            yield Episode(select_cameras(images, self.options, where), proprio, actions, success, where, rewards,
                          terminals)
