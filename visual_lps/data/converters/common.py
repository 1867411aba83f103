"""What every teleoperation-log converter shares: the `Source` contract, its options and the helpers for frames,
cameras, timestamps and success/failure folders.

A format is one `Source` subclass: opening it scans the source once; `len` counts its episodes (for the progress
bar), `facts` describes it (for `env_args`) and `episodes` reads them. Every problem raises `ConversionError` naming
the file and what is wrong; the writer then removes its temporary file, so a failed conversion leaves no output.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from visual_lps.data.robot_hdf5 import Episode

RESIZE_BATCH = 64
"""frames resized per call: one call per frame is slow, one per episode holds the whole episode at source size"""
RESIZE_FLOAT_BYTES = 256 << 20
"""memory of the float copies `resize_frames` makes at once: 64 frames resized to 2048x2048 would take 6 GiB"""
OUTCOME_FOLDERS = {"success": True, "failure": False}
"""DROID's layout: an episode under a top-level success/ or failure/ folder of the source has that outcome"""
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
"""Pillow modes that convert to 8-bit RGB without loss of meaning (16-bit and float images are not among them)"""


class ConversionError(ValueError):
    """A malformed source; the message names the file (and key, topic or column) at fault."""


@dataclass
class ConvertOptions:
    cameras: dict[str, str] | None = None
    """source camera name -> output camera name; None keeps every camera under its source name"""
    resize: tuple[int, int] | None = None
    """(height, width) of the output frames; None keeps the source size"""
    rate: float | None = None
    """target control rate in Hz for time-stamped sources (rosbag)"""
    image_topics: dict[str, str] = field(default_factory=dict)
    """rosbag: camera name -> image topic (sensor_msgs/Image or CompressedImage)"""
    state_topics: dict[str, str] = field(default_factory=dict)
    """rosbag: proprioception key -> state topic"""
    action_topic: str | None = None
    """rosbag: topic of the commanded actions"""
    default_success: bool = True
    """success of an episode whose source does not record it"""


class Source(ABC):
    """One teleoperation log in one format. `__init__` scans or parses it once (raising `ConversionError` naming the
    file at fault), so that counting, describing and reading the episodes do not each read it again, and a broken
    layout is refused before any output is written."""

    def __init__(self, src: Path, options: ConvertOptions) -> None:
        self.src = Path(src)
        self.options = options

    @abstractmethod
    def facts(self) -> dict:
        """What the output's `env_args` should record about the source: control rate, action space, ..."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of episodes, known before reading them (for the progress bar)."""

    @abstractmethod
    def episodes(self) -> Iterator[Episode]:
        """The episodes, read one at a time so that a long source never sits whole in memory."""


def select_cameras(images: Mapping[str, np.ndarray], options: ConvertOptions, source: str) -> dict[str, np.ndarray]:
    """The chosen cameras under their output names, resized if asked."""
    if options.cameras is None:
        chosen = dict(images)
    else:
        missing = [name for name in options.cameras if name not in images]
        if missing:
            raise ConversionError(f"{source}: camera(s) {missing} not found; available: {sorted(images)}")
        chosen = {options.cameras[name]: images[name] for name in options.cameras}
    if options.resize is not None:
        chosen = {name: resize_frames(frames, options.resize) for name, frames in chosen.items()}
    return chosen


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, height, width, 3) uint8, antialiased bilinear, a few frames at a time so that the
    float copies stay near RESIZE_FLOAT_BYTES even for large frames."""
    if frames.shape[1:3] == tuple(size):
        return frames
    pixels = max(frames.shape[1] * frames.shape[2], size[0] * size[1])
    step = max(1, RESIZE_FLOAT_BYTES // (2 * 3 * 4 * pixels))  # float32 input and output
    out = np.empty((len(frames), *size, 3), np.uint8)
    for start in range(0, len(frames), step):
        x = torch.from_numpy(np.ascontiguousarray(frames[start:start + step])).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + step] = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


class FrameBatcher:
    """Frames decoded one at a time, resized `RESIZE_BATCH` at a time when a size is given, so that a long episode
    costs about its output size rather than its source size."""

    def __init__(self, resize: tuple[int, int] | None) -> None:
        self.resize = resize
        self.batches: list[np.ndarray] = []
        self.pending: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        """One (H, W, 3) uint8 frame; every frame must have the size of the first."""
        self.pending.append(frame)
        if len(self.pending) >= RESIZE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            batch = np.stack(self.pending)
            self.batches.append(batch if self.resize is None else resize_frames(batch, self.resize))
            self.pending = []

    def array(self) -> np.ndarray:
        """Every frame added, in order, as one (N, H, W, 3) uint8 array (at least one frame must have been added).
        Each batch is dropped once copied, so the copy does not hold the frames twice."""
        self._flush()
        if len(self.batches) == 1:
            return self.batches.pop()
        out = np.empty((sum(len(batch) for batch in self.batches), *self.batches[0].shape[1:]), np.uint8)
        start = 0
        while self.batches:
            batch = self.batches.pop(0)
            out[start:start + len(batch)] = batch
            start += len(batch)
        return out


def decode_image(data: bytes | Path, where: str, formats: tuple[str, ...] | None = None) -> np.ndarray:
    """PNG/JPEG bytes or file -> (H, W, 3) uint8 RGB, with Pillow. `formats` (Pillow's names, e.g. ("JPEG", "PNG"))
    also refuses other formats and images that are not 8-bit; None takes whatever Pillow reads."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            if formats is not None and (image.format not in formats or image.mode not in EIGHT_BIT_MODES):
                raise ConversionError(f"{where}: unsupported image ({image.format} {image.mode}); supported: 8-bit "
                                      f"{' and '.join(formats)}")
            return np.asarray(image.convert("RGB"))
    except ConversionError:
        raise
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's UnidentifiedImageError is an OSError
        raise ConversionError(f"{where}: unreadable image (cannot decode it: {e})") from None


def bgr_to_rgb(frames: np.ndarray) -> np.ndarray:
    """BGR or BGRA (..., 3 | 4) -> RGB (..., 3), contiguous: it drops alpha and no longer refers to the source."""
    return np.ascontiguousarray(frames[..., 2::-1])


def check_increasing(times: np.ndarray, where: str, unit: str = "step", hint: str = "") -> None:
    """Timestamps must strictly increase: a repeat or a step back means a broken clock or merged recordings, and
    matching frames or resampling by time would silently pick the wrong data. The error names the first bad
    `unit` (step, row, message) and both times; `hint` adds a likely cause."""
    bad = np.flatnonzero(np.diff(times) <= 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise ConversionError(f"{where}: timestamps are not increasing ({unit} {i}): {times[i - 1]} then "
                              f"{times[i]}{hint}")


def outcome_folders(src: Path, pattern: str) -> list[tuple[Path, bool]]:
    """(path, success) for every path matching the glob `pattern` under src/success/ (all in name order), then under
    src/failure/ (in name order), as DROID lays out its recordings."""
    found = [(path, success) for folder, success in OUTCOME_FOLDERS.items()
             for path in sorted((src / folder).glob(pattern))]
    if not found:
        raise ConversionError(f"{src}: nothing matches success/{pattern} or failure/{pattern}")
    return found


def parse_mapping(values: list[str] | None, flag: str) -> dict[str, str]:
    """['a=b', 'c'] -> {'a': 'b', 'c': 'c'} for flags like --camera SRC[=NAME]."""
    mapping: dict[str, str] = {}
    for value in values or []:
        key, _, name = value.partition("=")
        if not key or (value.count("=") and not name):
            raise ValueError(f"{flag} {value!r}: expected SOURCE or SOURCE=NAME")
        mapping[key] = name or key
    return mapping
