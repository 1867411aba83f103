"""Training data from a robot HDF5 dataset (`visual_lps.data.robot_hdf5`): the demos of one split as
`OfflineData` with named observations (`<camera>_image` frames and proprioception keys).

Small files are read into RAM once (one preallocated array per key: peak memory near the raw size). Larger
ones stay on disk: `H5Rows` reads the rows a batch needs, sorted and deduplicated per demo, through an
h5py handle opened lazily by the process that reads (never inherited across a fork).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from visual_lps.data.chunks import OfflineData
from visual_lps.data.node_share import NodeShare
from visual_lps.data.robot_hdf5 import READ_ERRORS, damaged, mask_names, read_dataset
from visual_lps.observations import IMAGE_SUFFIX

CACHE_MODES = ("auto", "ram", "none")
RAM_FRACTION = 0.5
"""'auto' caches in RAM when the observations take at most this fraction of the available memory"""


class H5Rows:
    """One observation key of a list of demos, concatenated in order, read on demand by row index."""

    def __init__(self, path: Path, key: str, demos: list[str], lengths: list[int]):
        self.path, self.key, self.demos = Path(path), key, list(demos)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        with h5py.File(self.path, "r") as file:
            first = file[f"data/{demos[0]}/obs/{key}"]
            self.shape = (int(self.offsets[-1]), *first.shape[1:])
            self.dtype = first.dtype
        self._pid: int | None = None
        self._datasets: list[h5py.Dataset] = []

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_pid": None, "_datasets": []}  # handles never travel to another process

    def _open(self) -> list[h5py.Dataset]:
        if self._pid != os.getpid():
            file = h5py.File(self.path, "r")
            self._datasets = [file[f"data/{demo}/obs/{self.key}"] for demo in self.demos]
            self._pid = os.getpid()
        return self._datasets

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)  # sorted: reads walk the file forwards
        demo = np.searchsorted(self.offsets, unique, side="right") - 1
        local = unique - self.offsets[demo]
        out = np.empty((len(unique), *self.shape[1:]), self.dtype)
        datasets = self._open()
        # One plain read per row: h5py's point selection (dataset[list]) is ~70x slower on one-frame chunks.
        for j, (d, i) in enumerate(zip(demo.tolist(), local.tolist())):
            out[j] = read_dataset(datasets[d], i)
        return out[inverse].reshape(*rows.shape, *self.shape[1:])

    def read_all(self) -> np.ndarray:
        """The whole column in one preallocated array."""
        out = np.empty(self.shape, self.dtype)
        for d, dataset in enumerate(self._open()):
            try:
                dataset.read_direct(out, dest_sel=np.s_[self.offsets[d]:self.offsets[d + 1]])
            except READ_ERRORS as e:
                raise damaged(dataset, e) from None
        return out


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def load_robot_data(
    path: str | Path, split: str = "train", cache: str = "auto", share: NodeShare | None = None
) -> OfflineData:
    """The demos of `mask/<split>` (file validated beforehand: `validate_hdf5`); actions as stored. With `share`,
    the RAM cache is read by the node's first process only and mapped by the others. A damaged file raises
    DatasetKeyError (a ValueError) naming the file, demo and key, here or when a batch's rows are read."""
    if cache not in CACHE_MODES:
        raise ValueError(f"--data-cache {cache!r}: choose one of {', '.join(CACHE_MODES)}")
    path = Path(path)
    with h5py.File(path, "r") as file:
        demos = mask_names(file, split)
        if not demos:
            raise ValueError(f"{path}: mask/{split} lists no demos")
        groups = [file[f"data/{demo}"] for demo in demos]
        lengths = [int(g["actions"].shape[0]) for g in groups]
        keys = list(groups[0]["obs"].keys())
        actions = np.concatenate([read_dataset(g["actions"]) for g in groups]).astype(np.float32)
        rewards = np.concatenate([read_dataset(g["rewards"]) for g in groups]).astype(np.float32)
        terminals = np.concatenate([read_dataset(g["terminals"]) for g in groups]).astype(bool)
    columns = {key: H5Rows(path, key, demos, lengths) for key in keys}
    size = sum(column.nbytes for column in columns.values())
    in_ram = cache == "ram" or (cache == "auto" and size <= RAM_FRACTION * available_memory())
    if share is not None and share.follows:  # the first process decided (the memory it took is now shared)
        in_ram = share.holds(f"{split}-{keys[0]}")
    if in_ram and share is not None:
        observations = {key: share.array(f"{split}-{key}", column.read_all) for key, column in columns.items()}
    else:
        observations = {key: column.read_all() if in_ram else column for key, column in columns.items()}
    episode_ends = np.zeros(len(actions), bool)
    episode_ends[np.cumsum(lengths) - 1] = True
    return OfflineData(
        observations=observations,
        actions=actions,
        rewards=rewards,
        masks=1.0 - terminals.astype(np.float32),
        episode_ends=episode_ends,
        complete_last_rows=True,
    )


def state_statistics(data: OfflineData, min_std: float = 1e-6) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Mean and standard deviation per proprioception key (non-image keys) over the rows of `data`; a
    dimension that never varies gets a standard deviation of 1."""
    means, stds = {}, {}
    for key, column in data.observations.items():
        if key.endswith(IMAGE_SUFFIX):
            continue
        values = (column if isinstance(column, np.ndarray) else column.read_all()).astype(np.float64)
        means[key] = values.mean(axis=0)
        std = values.std(axis=0)
        stds[key] = np.where(std > min_std, std, 1.0)
    return means, stds
