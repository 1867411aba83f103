"""What every teleoperation-log converter shares: its options and the frame/camera helpers.

A converter is a module with `read_episodes(src, options) -> Iterator[Episode]` (and `count_episodes(src,
options) -> int` for the progress bar). It raises `ConversionError` naming the file and what is wrong; the
writer then removes its temporary file, so a failed conversion leaves no output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


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
    """(N, H, W, 3) uint8 -> (N, height, width, 3) uint8, antialiased bilinear."""
    if frames.shape[1:3] == tuple(size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def parse_mapping(values: list[str] | None, flag: str) -> dict[str, str]:
    """['a=b', 'c'] -> {'a': 'b', 'c': 'c'} for flags like --camera SRC[=NAME]."""
    mapping: dict[str, str] = {}
    for value in values or []:
        key, _, name = value.partition("=")
        if not key or (value.count("=") and not name):
            raise ValueError(f"{flag} {value!r}: expected SOURCE or SOURCE=NAME")
        mapping[key] = name or key
    return mapping
