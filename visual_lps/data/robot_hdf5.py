"""Robot camera datasets in HDF5: robomimic's layout, extended for offline RL (see docs/hdf5_format.md).

    data/                      attrs: total (frames), env_args (JSON), format_version
      demo_N/                  attrs: num_samples, success
        actions     (N, A)     float32
        rewards     (N,)       float32
        terminals   (N,)       bool     true MDP termination (success, or failure with a penalty)
        dones       (N,)       uint8    1 on the last step
        obs/<camera>_image (N, H, W, 3) uint8, one frame per HDF5 chunk
        obs/<proprio key>  (N, D) float32
    mask/train, mask/valid     demo names

Writing goes to a temporary file in the target folder that is renamed when complete, so an interrupted or
failed conversion leaves nothing at the target path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from visual_lps.files import replace_durably, temporary_path
from visual_lps.observations import IMAGE_SUFFIX

FORMAT_VERSION = 1
COMPRESSIONS = ("gzip", "lzf", "none")
REWARD_SCHEMES = ("sparse", "step-penalty", "source")
READ_ERRORS = (OSError, RuntimeError)
"""what h5py raises on a damaged file: OSError for a chunk that fails to read or decompress, RuntimeError for
damaged metadata; neither names the file or key"""
READ_BLOCK_BYTES = 16 << 20
"""the validator reads datasets back this many bytes at a time, so its memory does not grow with the file"""
PROGRESS_MIN_BYTES = 256 << 20
"""files from this size up get a progress bar while the validator reads them back"""


class DatasetFormatError(ValueError):
    """A file that does not follow the format; the message names the file and every problem found."""


class DatasetKeyError(DatasetFormatError):
    """One key of a file is damaged or malformed, found by a reader: 'FILE: KEY: problem'. `problem` is the message
    without the file's name, which the validator lists under the file."""

    def __init__(self, path: str | Path, key: str, problem: str) -> None:
        self.problem = f"{key}: {problem}"
        super().__init__(f"{path}: {self.problem}")


def read_dataset(dataset: h5py.Dataset, rows: int | slice = slice(None)) -> np.ndarray:
    """`dataset[rows]`, raising DatasetKeyError naming the file, demo and key where the file is damaged (h5py's
    own error, 'filter returned failure during read', names neither)."""
    try:
        return dataset[rows]
    except READ_ERRORS as e:
        raise damaged(dataset, e, rows) from None


def damaged(dataset: h5py.Dataset, error: Exception, rows: int | slice = slice(None)) -> DatasetKeyError:
    """The error for a read of `dataset` (at `rows`, when an int) that failed."""
    key = dataset.name.lstrip("/") + (f" row {rows}" if isinstance(rows, int) else "")
    return DatasetKeyError(dataset.file.filename, key, f"cannot be read, the file is damaged ({error})")


@dataclass
class Episode:
    """One demonstration, time-aligned: row t holds the observation at t and the action taken there."""

    images: dict[str, np.ndarray]
    """camera name (without the '_image' suffix) -> (N, H, W, 3) uint8 RGB"""
    proprio: dict[str, np.ndarray]
    """proprioception key -> (N, D) float32"""
    actions: np.ndarray
    """(N, A) float32"""
    success: bool
    source: str
    """the file or folder it came from, named in errors"""
    rewards: np.ndarray | None = None
    """(N,) rewards recorded by the source, used by the 'source' reward scheme"""
    terminals: np.ndarray | None = None
    """(N,) terminals recorded with those rewards (online episodes); default for 'source': the last step of a success"""
    step_data: dict[str, np.ndarray] = field(default_factory=dict)
    """further per-step arrays stored beside the actions (a robot episode's `interventions`, `policy_versions`)"""
    attrs: dict = field(default_factory=dict)
    """further facts stored as the demo's attributes (a robot episode's `label`, `complete`)"""

    def __post_init__(self) -> None:
        n = len(self.actions)
        if n == 0:
            raise ValueError(f"{self.source}: empty episode (no steps)")
        if self.actions.ndim != 2:
            raise ValueError(f"{self.source}: actions must be (steps, action_dim), got shape {self.actions.shape}")
        named = {f"image '{k}'": v for k, v in self.images.items()} | {f"'{k}'": v for k, v in self.proprio.items()}
        if self.rewards is not None:
            named["rewards"] = self.rewards
        if self.terminals is not None:
            named["terminals"] = self.terminals
        named |= {f"'{k}'": v for k, v in self.step_data.items()}
        for name, values in named.items():
            if len(values) != n:
                raise ValueError(f"{self.source}: {name} has {len(values)} steps but actions have {n}")
        for camera, frames in self.images.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"{self.source}: camera '{camera}' frames must be (N, H, W, 3) uint8, "
                                 f"got {frames.shape} {frames.dtype}")
        for name, values in {"actions": self.actions, **self.proprio}.items():
            if not np.isfinite(values).all():
                raise ValueError(f"{self.source}: '{name}' contains NaN or inf")


def label_rewards(
    episode: Episode, scheme: str, failure_penalty: float = -100.0
) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, terminals) of an episode.

    - 'sparse': 1 on the last step of a successful episode (terminal there), 0 elsewhere;
    - 'step-penalty' (the paper's real-robot setup): -1 per step, 0 on the last step of a success; a failure
      ends with `failure_penalty` (default -100 = -1/(1 - 0.99), the value of failing forever); both end
      in a terminal;
    - 'source': the rewards the source recorded, with its terminals where it recorded them (else a successful
      episode ends in a terminal).
    """
    n = len(episode.actions)
    terminals = np.zeros(n, bool)
    if scheme == "sparse":
        rewards = np.zeros(n, np.float32)
        rewards[-1] = float(episode.success)
        terminals[-1] = episode.success
    elif scheme == "step-penalty":
        rewards = np.full(n, -1.0, np.float32)
        rewards[-1] = 0.0 if episode.success else failure_penalty
        terminals[-1] = True
    elif scheme == "source":
        if episode.rewards is None:
            raise ValueError(f"{episode.source}: reward scheme 'source' but the source records no rewards")
        rewards = np.asarray(episode.rewards, np.float32)
        if not np.isfinite(rewards).all():
            raise ValueError(f"{episode.source}: the recorded rewards contain NaN or inf")
        if episode.terminals is not None:
            terminals = np.asarray(episode.terminals, bool)
        else:
            terminals[-1] = episode.success
    else:
        raise ValueError(f"unknown reward scheme {scheme!r}; choose one of {', '.join(REWARD_SCHEMES)}")
    return rewards, terminals


@dataclass
class _Layout:
    """What the first episode fixed and every later one must match."""

    cameras: dict[str, tuple[int, ...]]
    proprio: dict[str, int]
    action_dim: int


def next_observation_layout(path: str, source: h5py.Dataset) -> h5py.VirtualLayout:
    """robomimic's `next_obs/<key>` without a second copy of the frames: a virtual dataset over `obs/<key>` of
    the same file ('.'), row t mapped to row t + 1 and the last row to itself (robomimic's convention)."""
    n = source.shape[0]
    layout = h5py.VirtualLayout(shape=source.shape, dtype=source.dtype)
    rows = h5py.VirtualSource(".", path, shape=source.shape, dtype=source.dtype)
    if n > 1:
        layout[: n - 1] = rows[1:]
    layout[n - 1] = rows[n - 1]
    return layout


@dataclass
class HDF5DatasetWriter:
    """Context manager writing episodes to `path` atomically. On an exception, or a written file that fails
    `validate_hdf5`, nothing is left at `path` (and a file already there is kept); else `summary` describes it."""

    path: Path
    compression: str = "gzip"
    reward_scheme: str = "sparse"
    failure_penalty: float = -100.0
    valid_fraction: float = 0.1
    split_seed: int = 0
    env_args: dict = field(default_factory=dict)
    """extra facts for data.attrs['env_args'] (control rate, source format, action limits when known)"""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"--compression {self.compression!r}: choose one of {', '.join(COMPRESSIONS)}")
        if self.reward_scheme not in REWARD_SCHEMES:
            raise ValueError(f"--rewards {self.reward_scheme!r}: choose one of {', '.join(REWARD_SCHEMES)}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction {self.valid_fraction}: must be in [0, 1)")
        if not math.isfinite(self.failure_penalty):
            raise ValueError(f"--failure-penalty {self.failure_penalty}: must be a finite number")
        self._tmp = temporary_path(self.path)
        self._file: h5py.File | None = None
        self._layout: _Layout | None = None
        self._names: list[str] = []
        self._successes: list[bool] = []
        self._total = 0
        self._action_min: np.ndarray | None = None
        self._action_max: np.ndarray | None = None
        self.summary: DatasetSummary | None = None

    def __enter__(self) -> HDF5DatasetWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self._tmp, "w")
        self._file.create_group("data")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
                self._file.close()
                self.summary = validate_hdf5(self._tmp, shown_as=self.path)  # an invalid file never takes `path`
                replace_durably(self._tmp, self.path)
        finally:
            if self._file is not None and self._file.id.valid:
                self._file.close()
            self._tmp.unlink(missing_ok=True)

    def add(self, episode: Episode) -> str:
        rewards, terminals = label_rewards(episode, self.reward_scheme, self.failure_penalty)
        self._check_layout(episode)
        name = f"demo_{len(self._names)}"
        group = self._file["data"].create_group(name)
        n = len(episode.actions)
        compression = None if self.compression == "none" else self.compression
        group.create_dataset("actions", data=episode.actions.astype(np.float32))
        group.create_dataset("rewards", data=rewards)
        group.create_dataset("terminals", data=terminals)
        dones = np.zeros(n, np.uint8)
        dones[-1] = 1
        group.create_dataset("dones", data=dones)
        obs = group.create_group("obs")
        for camera, frames in episode.images.items():
            obs.create_dataset(camera + IMAGE_SUFFIX, data=frames, chunks=(1, *frames.shape[1:]),
                               compression=compression)
        for key, values in episode.proprio.items():
            obs.create_dataset(key, data=np.asarray(values, np.float32).reshape(n, -1))
        next_obs = group.create_group("next_obs")
        for key, source in obs.items():
            next_obs.create_virtual_dataset(key, next_observation_layout(f"data/{name}/obs/{key}", source))
        for key, values in episode.step_data.items():
            group.create_dataset(key, data=values)
        group.attrs["num_samples"] = n
        group.attrs["success"] = bool(episode.success)
        group.attrs.update(episode.attrs)
        self._names.append(name)
        self._successes.append(bool(episode.success))
        self._total += n
        low, high = episode.actions.min(axis=0), episode.actions.max(axis=0)
        self._action_min = low if self._action_min is None else np.minimum(self._action_min, low)
        self._action_max = high if self._action_max is None else np.maximum(self._action_max, high)
        return name

    def _check_layout(self, episode: Episode) -> None:
        layout = _Layout(
            cameras={k: v.shape[1:] for k, v in episode.images.items()},
            proprio={k: int(np.prod(np.shape(v)[1:], dtype=int)) for k, v in episode.proprio.items()},
            action_dim=episode.actions.shape[1],
        )
        if self._layout is None:
            self._layout = layout
        elif layout != self._layout:
            raise ValueError(f"{episode.source}: cameras, proprioception or action size differ from the first "
                             f"episode ({layout} vs {self._layout})")

    def _finish(self) -> None:
        if not self._names:
            raise ValueError(f"{self.path}: no episodes to write")
        rng = np.random.default_rng(self.split_seed)
        num_valid = int(round(self.valid_fraction * len(self._names)))
        if self.valid_fraction > 0 and len(self._names) > 1:
            num_valid = min(max(num_valid, 1), len(self._names) - 1)
        valid = set(rng.choice(len(self._names), num_valid, replace=False).tolist())
        mask = self._file.create_group("mask")
        mask.create_dataset("train", data=np.array([n for i, n in enumerate(self._names) if i not in valid], "S"))
        mask.create_dataset("valid", data=np.array([n for i, n in enumerate(self._names) if i in valid], "S"))
        data = self._file["data"]
        data.attrs["total"] = self._total
        data.attrs["format_version"] = FORMAT_VERSION
        env_args = {
            "cameras": list(self._layout.cameras),
            "image_shapes": {k: list(v) for k, v in self._layout.cameras.items()},
            "proprio_keys": list(self._layout.proprio),
            "action_dim": self._layout.action_dim,
            "action_low": self._action_min.tolist(),
            "action_high": self._action_max.tolist(),
            "reward_scheme": self.reward_scheme,
            "failure_penalty": self.failure_penalty,
            "compression": self.compression,
            # What robomimic's env metadata holds: a real robot has no robomimic environment class, so `type`
            # is null; robomimic's dataset classes never read it.
            "env_name": self.path.stem,
            "type": None,
            "env_kwargs": {},
        } | self.env_args
        data.attrs["env_args"] = json.dumps(env_args)


def demo_names(group: h5py.Group) -> list[str]:
    """demo_N names in numeric order (demo_2 before demo_10)."""
    names = [k for k in group if k.startswith("demo_")]
    return sorted(names, key=lambda k: (len(k), k))


def mask_names(file: h5py.File, split: str) -> list[str]:
    """The demo names in mask/<split>. Stored names are bytes: a damaged list raises DatasetKeyError naming the
    file and key, where decoding alone would raise a bare UnicodeDecodeError."""
    key = f"mask/{split}"
    item = file.get(key)
    if not isinstance(item, h5py.Dataset) or item.ndim != 1:
        raise DatasetKeyError(file.filename, key, "missing, or not a list of demo names")
    names = []
    for i, name in enumerate(read_dataset(item).tolist()):
        try:
            names.append(name.decode() if isinstance(name, bytes) else name)
        except UnicodeDecodeError:
            raise DatasetKeyError(file.filename, key, f"entry {i} ({name!r}) is not UTF-8 text: the list is "
                                                      f"damaged") from None
        if not isinstance(names[-1], str):
            raise DatasetKeyError(file.filename, key, f"entry {i} ({name!r}) is not a demo name")
    return names


@dataclass
class DatasetSummary:
    path: Path
    episodes: int
    frames: int
    cameras: dict[str, tuple[int, ...]]
    proprio: dict[str, int]
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    success_rate: float
    train: list[str]
    valid: list[str]
    env_args: dict

    def __str__(self) -> str:
        cams = ", ".join(f"{k} {'x'.join(map(str, v[:2]))}" for k, v in self.cameras.items()) or "none"
        proprio = ", ".join(f"{k} ({d})" for k, d in self.proprio.items()) or "none"
        rng = ", ".join(f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(self.action_low, self.action_high))
        return (f"{self.path}: valid\n  episodes {self.episodes} (train {len(self.train)}, valid {len(self.valid)}), "
                f"frames {self.frames}\n  cameras: {cams}\n  proprioception: {proprio}\n"
                f"  actions: {self.action_dim}-D, range per dimension {rng}\n"
                f"  success rate {self.success_rate:.1%}")


def _check_masks(file: h5py.File, names: list[str], problems: list[str]) -> tuple[list[str], list[str]]:
    """The train and valid demo names of mask/, each problem with them appended to `problems`."""
    train: list[str] = []
    valid: list[str] = []
    if "mask" not in file or "train" not in file["mask"] or "valid" not in file["mask"]:
        problems.append("mask/train and mask/valid are required")
        return train, valid
    try:
        train, valid = mask_names(file, "train"), mask_names(file, "valid")
    except DatasetKeyError as e:
        problems.append(e.problem)
    unknown = sorted(set(train + valid) - set(names))
    if unknown:
        problems.append(f"mask: names {unknown[:5]} are not demos in data/")
    if set(train) & set(valid):
        problems.append(f"mask: {sorted(set(train) & set(valid))[:5]} are in both train and valid")
    if not train:
        problems.append("mask/train is empty")
    return train, valid


def validate_hdf5(path: str | Path, check_values: bool = True, read_everything: bool = False,
                  progress: bool = False, shown_as: str | Path | None = None) -> DatasetSummary:
    """Check a file against the format (keys, dtypes, shapes, lengths, NaN/inf, masks); raise
    DatasetFormatError listing every problem, else return a summary. `check_values` reads every array
    (images excepted) for NaN/inf; `read_everything` also reads back every chunk of every demo's datasets, images
    included, a block at a time (with a progress bar on large files when `progress`), so that a damaged file is
    found here rather than during training. `shown_as` names the file in errors and the summary (a temporary file
    checked before it takes its final name)."""
    path = Path(path)
    shown = Path(shown_as) if shown_as is not None else path
    if not path.exists():
        raise DatasetFormatError(f"{shown}: no such file")
    if not path.is_file():  # opening a FIFO would wait for a writer forever
        raise DatasetFormatError(f"{shown}: not a regular file (a folder, FIFO or device is no HDF5 dataset)")
    problems: list[str] = []
    try:
        file = h5py.File(path, "r")
    except READ_ERRORS as e:
        raise DatasetFormatError(f"{shown}: cannot open as HDF5 ({e})") from None
    with file:
        if "data" not in file:
            raise DatasetFormatError(f"{shown}: no 'data' group (the robomimic layout: data/demo_N/...)")
        data = file["data"]
        names = demo_names(data)
        if not names:
            raise DatasetFormatError(f"{shown}: 'data' holds no demo_N group")
        env_args: dict = {}
        try:
            env_args = json.loads(data.attrs["env_args"])
        except KeyError:
            problems.append("data.attrs['env_args'] missing")
        except (TypeError, ValueError) as e:
            problems.append(f"data.attrs['env_args'] is not JSON ({e})")
        layout: _Layout | None = None
        frames, successes, lows, highs = 0, [], [], []
        bar = tqdm(names, desc=f"reading {shown.name}", unit="demo", leave=False,
                   disable=not (read_everything and progress and path.stat().st_size >= PROGRESS_MIN_BYTES))
        for name in bar:
            where = f"data/{name}"
            try:
                found = _check_demo(data[name], where, check_values, read_everything)
            except DatasetKeyError as e:
                problems.append(e.problem)
                continue
            except READ_ERRORS as e:  # damaged metadata: h5py cannot even describe a dataset
                problems.append(f"{where}: cannot be read, the file is damaged ({e})")
                continue
            problems += found.problems
            if found.layout is None:
                continue
            if layout is None:
                layout = found.layout
            elif found.layout != layout:
                problems.append(f"{where}: cameras/proprioception/actions {found.layout} differ from the first "
                                f"demo's {layout}")
            if found.action_range is not None:
                lows.append(found.action_range[0])
                highs.append(found.action_range[1])
            frames += found.frames
            successes.append(found.success)
        if data.attrs.get("total") != frames and not problems:
            problems.append(f"data.attrs['total'] = {data.attrs.get('total')}, demos hold {frames} frames")
        train, valid = _check_masks(file, names, problems)
    if problems:
        raise DatasetFormatError(f"{shown}: not a valid visual-lps HDF5 dataset:\n  " + "\n  ".join(problems))
    return DatasetSummary(
        path=shown, episodes=len(names), frames=frames, cameras=layout.cameras, proprio=layout.proprio,
        action_dim=layout.action_dim,
        action_low=np.min(lows, axis=0) if lows else np.full(layout.action_dim, np.nan),
        action_high=np.max(highs, axis=0) if highs else np.full(layout.action_dim, np.nan),
        success_rate=float(np.mean(successes)), train=train, valid=valid, env_args=env_args,
    )


@dataclass
class _DemoCheck:
    """What checking one demo found: its problems, and (when its structure is sound) its layout and facts."""

    problems: list[str]
    layout: _Layout | None = None
    frames: int = 0
    success: bool = False
    action_range: tuple[np.ndarray, np.ndarray] | None = None


def _check_demo(demo: h5py.Group, where: str, check_values: bool, read_everything: bool) -> _DemoCheck:
    """One demo against the format; a damaged read raises DatasetKeyError (`read_dataset`)."""
    missing = [k for k in ("actions", "rewards", "terminals", "dones", "obs") if k not in demo]
    if missing:
        return _DemoCheck([f"{where}: missing {missing}"])
    n = demo["actions"].shape[0] if demo["actions"].ndim >= 1 else 0
    if n == 0:
        return _DemoCheck([f"{where}: empty episode"])
    if demo["actions"].ndim != 2 or demo["actions"].dtype != np.float32:
        return _DemoCheck([f"{where}/actions: must be (N, A) float32, got {demo['actions'].shape} "
                           f"{demo['actions'].dtype}"])
    problems = []
    for key in ("rewards", "terminals", "dones"):
        if demo[key].shape != (n,):
            problems.append(f"{where}/{key}: shape {demo[key].shape}, expected ({n},) like actions")
    if demo["rewards"].dtype.kind != "f":
        problems.append(f"{where}/rewards: dtype {demo['rewards'].dtype}, expected float")
    for key in ("terminals", "dones"):
        if demo[key].dtype.kind not in "bui":
            problems.append(f"{where}/{key}: dtype {demo[key].dtype}, expected bool or integer")
    if demo.attrs.get("num_samples") != n:
        problems.append(f"{where}: attrs['num_samples'] = {demo.attrs.get('num_samples')}, actions have {n}")
    if "success" not in demo.attrs:
        problems.append(f"{where}: attrs['success'] missing")
    cameras, proprio = {}, {}
    for key, item in demo["obs"].items():
        if not isinstance(item, h5py.Dataset) or item.shape[:1] != (n,):
            problems.append(f"{where}/obs/{key}: shape {getattr(item, 'shape', None)}, expected {n} rows")
        elif key.endswith(IMAGE_SUFFIX):
            if item.dtype != np.uint8 or item.ndim != 4 or item.shape[-1] != 3:
                problems.append(f"{where}/obs/{key}: must be (N, H, W, 3) uint8, got {item.shape} {item.dtype}")
            cameras[key.removesuffix(IMAGE_SUFFIX)] = item.shape[1:]
        else:
            if item.dtype != np.float32 or item.ndim != 2:
                problems.append(f"{where}/obs/{key}: must be (N, D) float32, got {item.shape} {item.dtype}")
            proprio[key] = int(np.prod(item.shape[1:]))
    if not cameras and not proprio:
        problems.append(f"{where}/obs: no observations")
    found = _DemoCheck(problems, _Layout(cameras, proprio, demo["actions"].shape[1]), n,
                       bool(demo.attrs.get("success", False)))
    if problems:
        return found
    if check_values:
        actions = read_dataset(demo["actions"])
        arrays = {"actions": actions, "rewards": read_dataset(demo["rewards"])}
        arrays |= {f"obs/{k}": read_dataset(demo["obs"][k]) for k in proprio}
        for key, values in arrays.items():
            if not np.isfinite(values).all():
                problems.append(f"{where}/{key}: contains NaN or inf")
        if read_dataset(demo["dones"], -1) != 1:
            problems.append(f"{where}/dones: last step must be 1")
        found.action_range = actions.min(axis=0), actions.max(axis=0)
    if read_everything:
        for key in ("actions", "rewards", "terminals", "dones", *(f"obs/{k}" for k in demo["obs"])):
            read_back(demo[key])
    return found


def read_back(dataset: h5py.Dataset) -> None:
    """Read every chunk of a dataset, a block of whole chunks at a time (at most about READ_BLOCK_BYTES in
    memory); a damaged one raises DatasetKeyError naming the first row that cannot be read."""
    n = dataset.shape[0]
    row_bytes = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:]))
    step = max(1, READ_BLOCK_BYTES // max(row_bytes, 1))
    if dataset.chunks is not None:
        step = max(dataset.chunks[0], step - step % dataset.chunks[0])
    buffer = np.empty((min(step, n), *dataset.shape[1:]), dataset.dtype)
    for start in range(0, n, step):
        stop = min(start + step, n)
        try:
            dataset.read_direct(buffer, np.s_[start:stop], np.s_[: stop - start])
        except READ_ERRORS as e:
            for row in range(start, stop):  # name the first row at fault
                read_dataset(dataset, row)
            raise damaged(dataset, e) from None
