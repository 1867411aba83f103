"""ROS bags -> episodes, through the pure-Python `rosbags` library (no ROS installation needed).

    python tools/convert_teleop.py --format rosbag BAGS out.hdf5 --rate 10 \\
        --image-topic front=/camera/color/image_raw --state-topic joints=/joint_states --action-topic /cmd

Sources (`src`):
- one bag: a ROS 1 `.bag` file, a ROS 2 bag folder (holding `metadata.yaml`, sqlite3 `.db3` or `.mcap`
  storage), or a bare `.db3`/`.mcap` storage file = one episode;
- a folder of such bags, searched recursively (a ROS 2 bag folder counts as one bag), one episode per bag in
  the order of their paths. A bag under a top-level `success/` or `failure/` subfolder (DROID's layout) takes
  its success from that folder; any other bag takes `options.default_success`.

Topics, chosen by the options:
- `image_topics` camera name -> topic: `sensor_msgs/msg/Image` (rgb8, bgr8, rgba8, bgra8, mono8) or
  `sensor_msgs/msg/CompressedImage` (JPEG or PNG, decoded with Pillow); frames become RGB uint8;
- `state_topics` proprioception key -> topic, and `action_topic`, each a vector per message:
  `sensor_msgs/msg/JointState` (position), `std_msgs/msg/Float32MultiArray`/`Float64MultiArray` (data),
  `std_msgs/msg/Float32`/`Float64` (data, 1-D), `geometry_msgs/msg/PoseStamped`/`Pose` (position xyz then
  orientation xyzw), `geometry_msgs/msg/Twist`/`TwistStamped` (linear xyz then angular xyz).

Time: every message is placed at the bag's receive (record) timestamp, never at its header stamp. Not every
supported type has a header (Float64MultiArray, Twist), and header stamps come from the clocks of the
publishers (a camera's own clock, sim time, or 0 when left unset), so mixing them with record times would put
the topics on different clocks. The record time is the one clock every message has. Within a topic these
times must be strictly increasing (the readers return each topic in time order, so in practice this rejects
several messages recorded at the same instant, e.g. two publishers on one topic).

Resampling: a grid at `options.rate` Hz runs from the latest first message among the chosen topics to the
earliest last message; at each grid time every topic takes its most recent message at or before it
(zero-order hold). Row t holds the observation at grid time t and the action in force then.

Memory: a bag is read twice. The first pass reads the low-dimensional topics and only the timestamps of the
image topics; the second decodes only the image messages the grid picks (each once), resizing them in batches
as they come, so a long bag costs about its output, not its recording.

Every problem with a bag (missing, empty or unsupported topic, unsupported image encoding, corrupt or
truncated file, timestamps going backwards, topics that never overlap) raises `ConversionError` naming the
bag file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from visual_lps.data.converters.common import (OUTCOME_FOLDERS, ConversionError, ConvertOptions, FrameBatcher,
                                               Source, bgr_to_rgb, check_increasing, decode_image, select_cameras)
from visual_lps.data.robot_hdf5 import Episode
from visual_lps.observations import IMAGE_SUFFIX

BAG_FILE_SUFFIXES = (".bag", ".db3", ".mcap")
"""ROS 1 bags, and ROS 2 storage files read without their folder"""

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
RAW_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
"""sensor_msgs/Image encodings read, with their channels"""
PIL_FORMATS = ("JPEG", "PNG")
"""CompressedImage formats read (8-bit only: 16-bit and float PNGs are refused)"""


def _xyz(v: Any) -> list[float]:
    return [v.x, v.y, v.z]


def _pose(p: Any) -> list[float]:
    return _xyz(p.position) + [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]


def _twist(t: Any) -> list[float]:
    return _xyz(t.linear) + _xyz(t.angular)


VECTOR_TYPES: dict[str, Callable[[Any], Any]] = {
    "sensor_msgs/msg/JointState": lambda m: m.position,
    "std_msgs/msg/Float32MultiArray": lambda m: m.data,
    "std_msgs/msg/Float64MultiArray": lambda m: m.data,
    "std_msgs/msg/Float32": lambda m: [m.data],
    "std_msgs/msg/Float64": lambda m: [m.data],
    "geometry_msgs/msg/PoseStamped": lambda m: _pose(m.pose),
    "geometry_msgs/msg/Pose": _pose,
    "geometry_msgs/msg/TwistStamped": lambda m: _twist(m.twist),
    "geometry_msgs/msg/Twist": _twist,
}
"""message type -> the vector it contributes (a state or an action)"""


class RosbagSource(Source):
    """One bag or a folder of bags; opening it checks the topic options and finds the bags (see the module
    docstring)."""

    def __init__(self, src: Path, options: ConvertOptions) -> None:
        super().__init__(src, options)
        _check_options(self.src, options)
        self.bags = find_bags(self.src)

    def __len__(self) -> int:
        return len(self.bags)

    def facts(self) -> dict:
        options = self.options
        return {
            "control_rate_hz": options.rate,
            "image_topics": {(options.cameras or {}).get(name, name): options.image_topics[name]
                             for name in _chosen_cameras(options)},
            "state_topics": dict(options.state_topics),
            "action_topic": options.action_topic,
            "timestamps": "bag receive time",
            "resampling": "zero-order hold",
        }

    def episodes(self) -> Iterator[Episode]:
        for bag, success in self.bags:
            yield _read_bag(bag, self.options, self.options.default_success if success is None else success)


# ------------------------------------------------------------------------------------------ finding bags


def _is_ros2_bag_dir(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


def _is_bag_file(path: Path) -> bool:
    return path.is_file() and path.suffix in BAG_FILE_SUFFIXES


def find_bags(src: Path) -> list[tuple[Path, bool | None]]:
    """(bag, success from its success/ or failure/ folder, else None) for every bag at or under `src`."""
    src = Path(src)
    if _is_bag_file(src) or _is_ros2_bag_dir(src):
        return [(src, None)]
    if not src.is_dir():
        raise ConversionError(f"{src}: not a rosbag (expected a .bag file, a ROS 2 bag folder holding "
                              f"metadata.yaml, or a folder of bags)")
    found: list[Path] = []

    def scan(folder: Path) -> None:
        for entry in folder.iterdir():
            if entry.name.startswith("."):
                continue
            if _is_ros2_bag_dir(entry) or _is_bag_file(entry):
                found.append(entry)
            elif entry.is_dir():
                scan(entry)

    scan(src)
    if not found:
        raise ConversionError(f"{src}: no rosbags found (.bag files, ROS 2 bag folders holding metadata.yaml, "
                              f".db3 or .mcap files)")
    found.sort(key=lambda path: path.relative_to(src).parts)
    return [(bag, OUTCOME_FOLDERS.get(bag.relative_to(src).parts[0])) for bag in found]


# ------------------------------------------------------------------------------------------------ options


def _chosen_cameras(options: ConvertOptions) -> list[str]:
    """The source camera names (keys of image_topics) to read."""
    return list(options.image_topics) if options.cameras is None else list(options.cameras)


def _check_options(src: Path, options: ConvertOptions) -> None:
    if options.rate is None:
        raise ConversionError(f"{src}: rosbags need --rate (the target control rate in Hz)")
    if not (math.isfinite(options.rate) and options.rate > 0):
        raise ConversionError(f"{src}: --rate must be a positive number of Hz, got {options.rate}")
    if not options.action_topic:
        raise ConversionError(f"{src}: rosbags need --action-topic (the commanded actions)")
    if not options.image_topics and not options.state_topics:
        raise ConversionError(f"{src}: choose at least one --image-topic NAME=TOPIC or --state-topic NAME=TOPIC")
    if options.cameras is not None:
        missing = [name for name in options.cameras if name not in options.image_topics]
        if missing:
            raise ConversionError(f"{src}: camera(s) {missing} not found; available (--image-topic names): "
                                  f"{sorted(options.image_topics)}")
    outputs = [options.cameras[name] for name in options.cameras] if options.cameras is not None else list(
        options.image_topics)
    for kind, names in (("camera", outputs), ("state", list(options.state_topics))):
        for name in names:
            if not name or "/" in name:
                raise ConversionError(f"{src}: {kind} name {name!r} cannot be an HDF5 key; name it, as in "
                                      f"--{'image' if kind == 'camera' else 'state'}-topic NAME=/topic")
    clash = [key for key in options.state_topics if key.endswith(IMAGE_SUFFIX)]
    if clash:
        raise ConversionError(f"{src}: state names {clash} end in {IMAGE_SUFFIX!r}, which marks camera frames")


# ------------------------------------------------------------------------------------------- reading one


@cache
def _default_typestore():
    """Types for ROS 2 bags that embed no message definitions (rosbag2 before Iron)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


class _Library:
    """Turns any exception of the rosbags stack (its own errors, sqlite3, struct, yaml, decompressors) into a
    ConversionError naming the bag; ConversionErrors pass through."""

    def __init__(self, bag: Path, what: str) -> None:
        self.bag, self.what = bag, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, ConversionError) or not isinstance(exc, Exception):
            return False
        detail = str(exc) or type(exc).__name__
        raise ConversionError(f"{self.bag}: {self.what}; corrupt or truncated bag? ({type(exc).__name__}: "
                              f"{detail})") from exc


def _read_bag(bag: Path, options: ConvertOptions, success: bool) -> Episode:
    """One bag resampled at options.rate onto one clock (see the module docstring)."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    cameras = _chosen_cameras(options)
    roles: dict[str, list[str]] = {}  # topic -> the flags that chose it, for messages
    for name in cameras:
        roles.setdefault(options.image_topics[name], []).append(f"--image-topic {name}")
    for key, topic in options.state_topics.items():
        roles.setdefault(topic, []).append(f"--state-topic {key}")
    roles.setdefault(options.action_topic, []).append("--action-topic")
    image_topics = {options.image_topics[name] for name in cameras}
    vector_topics = set(options.state_topics.values()) | {options.action_topic}

    with _Library(bag, "cannot open the bag"):
        reader = AnyReader([bag], default_typestore=_default_typestore())
        reader.open()
    try:
        with _Library(bag, "cannot read the bag's topics"):
            available = reader.topics
        types = _check_topics(bag, available, roles, image_topics, vector_topics)
        connections = {topic: available[topic].connections for topic in roles}

        # pass 1: every timestamp, and the vectors of the state and action topics
        times: dict[str, list[int]] = {topic: [] for topic in roles}
        vectors: dict[str, list[Any]] = {topic: [] for topic in vector_topics}
        wanted = [c for topic in roles for c in connections[topic]]
        with _Library(bag, "cannot read its messages"):
            for connection, stamp, raw in reader.messages(connections=wanted):
                topic = connection.topic
                times[topic].append(stamp)
                if topic in vectors:
                    vectors[topic].append(VECTOR_TYPES[types[topic]](_deserialize(reader, bag, topic, raw,
                                                                                  connection.msgtype)))
        stamps = {topic: _check_times(bag, topic, values) for topic, values in times.items()}
        grid = _grid(bag, stamps, options.rate)
        picks = {topic: np.searchsorted(stamps[topic], grid, side="right") - 1 for topic in roles}
        held = {topic: _stack_vectors(bag, topic, vectors[topic], picks[topic]) for topic in vector_topics}

        # pass 2: decode only the image messages the grid holds, each once
        frames = _read_frames(reader, bag, {t: connections[t] for t in image_topics},
                              {t: (stamps[t], picks[t]) for t in image_topics}, types, options.resize)
    finally:
        with suppress(Exception):  # a close failing after the messages were read changes nothing
            reader.close()

    images = {name: frames[options.image_topics[name]] for name in cameras}
    return Episode(
        images=select_cameras(images, options, str(bag)),
        proprio={key: held[topic] for key, topic in options.state_topics.items()},
        actions=held[options.action_topic],
        success=bool(success),
        source=str(bag),
    )


def _check_topics(bag: Path, available: dict, roles: dict[str, list[str]], image_topics: set[str],
                  vector_topics: set[str]) -> dict[str, str]:
    """topic -> message type, after checking each chosen topic exists and has a supported type (whether it has
    messages is checked on reading them: the counts in a bag's summary can be missing)."""
    missing = [f"{topic} (chosen by {', '.join(flags)})" for topic, flags in roles.items() if topic not in available]
    if missing:
        listing = ", ".join(f"{name} ({info.msgtype})" for name, info in sorted(available.items())) or "none"
        raise ConversionError(f"{bag}: topic(s) {', '.join(missing)} not found; available topics: {listing}")
    types = {}
    for topic, flags in roles.items():
        chosen = f"topic {topic} (chosen by {', '.join(flags)})"
        info = available[topic]
        msgtypes = {c.msgtype for c in info.connections}
        if len(msgtypes) != 1:
            raise ConversionError(f"{bag}: {chosen} carries several message types {sorted(msgtypes)}")
        msgtype = msgtypes.pop()
        if topic in image_topics and msgtype not in IMAGE_TYPES:
            raise ConversionError(f"{bag}: {chosen} has unsupported message type {msgtype} for images; "
                                  f"supported: {', '.join(IMAGE_TYPES)}")
        if topic in vector_topics and msgtype not in VECTOR_TYPES:
            raise ConversionError(f"{bag}: {chosen} has unsupported message type {msgtype} for states and "
                                  f"actions; supported: {', '.join(VECTOR_TYPES)}")
        types[topic] = msgtype
    return types


def _deserialize(reader: Any, bag: Path, topic: str, raw: Any, msgtype: str) -> Any:
    with _Library(bag, f"cannot decode a {msgtype} message of topic {topic}"):
        return reader.deserialize(raw, msgtype)


def _check_times(bag: Path, topic: str, stamps: list[int]) -> np.ndarray:
    if not stamps:
        raise ConversionError(f"{bag}: topic {topic} has no messages")
    values = np.asarray(stamps, np.int64)
    check_increasing(values, f"{bag}: topic {topic}", unit="message",
                     hint=" ns; equal times are not strictly increasing either: several publishers on one topic, "
                          "or a recording with a coarse (simulated) clock?")
    return values


def _grid(bag: Path, stamps: dict[str, np.ndarray], rate: float) -> np.ndarray:
    """Grid times (ns) at `rate` Hz from the latest first message to the earliest last message."""
    start_topic = max(stamps, key=lambda t: stamps[t][0])
    end_topic = min(stamps, key=lambda t: stamps[t][-1])
    start, end = int(stamps[start_topic][0]), int(stamps[end_topic][-1])
    if end < start:
        spans = ", ".join(f"{t} {v[0] / 1e9:.3f}-{v[-1] / 1e9:.3f} s" for t, v in stamps.items())
        raise ConversionError(f"{bag}: empty episode: the chosen topics never overlap in time ({end_topic} ends "
                              f"before {start_topic} starts; {spans})")
    period = 1e9 / rate
    count = int(math.floor((end - start) / period + 1e-9)) + 1
    grid = start + np.round(np.arange(count) * period).astype(np.int64)
    return grid[grid <= end]


def _stack_vectors(bag: Path, topic: str, vectors: list[Any], picks: np.ndarray) -> np.ndarray:
    """The vectors of the picked messages, (steps, dim) float32, after checking they all have one size."""
    sizes = {len(v) for v in vectors}
    if len(sizes) != 1:
        raise ConversionError(f"{bag}: topic {topic}: messages hold vectors of different sizes {sorted(sizes)}")
    if sizes == {0}:
        raise ConversionError(f"{bag}: topic {topic}: messages hold empty vectors (e.g. JointState without "
                              f"positions)")
    values = np.array([np.asarray(vectors[i], np.float64) for i in picks], np.float64)
    if not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values).all(axis=1)))
        raise ConversionError(f"{bag}: topic {topic}: NaN or inf in the message held at step {row}")
    return values.astype(np.float32)


# ------------------------------------------------------------------------------------------------- images


def _read_frames(reader: Any, bag: Path, connections: dict[str, list], held: dict[str, tuple],
                 types: dict[str, str], resize: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """topic -> (steps, H, W, 3) uint8: the frames of the picked messages, decoded once each."""
    if not connections:
        return {}
    # topic -> the stamps of the messages the grid holds, and for each grid step the rank of its message among them
    # (both passes read a topic in time order, as the first pass checked)
    wanted: dict[str, set[int]] = {}
    rows: dict[str, np.ndarray] = {}
    for topic, (stamps, picks) in held.items():
        unique, rows[topic] = np.unique(picks, return_inverse=True)
        wanted[topic] = {int(stamp) for stamp in stamps[unique]}
    frames = {topic: FrameBatcher(resize) for topic in connections}
    first_shape: dict[str, tuple[int, ...]] = {}
    done = {topic: 0 for topic in connections}
    start = min(int(stamps[picks[0]]) for stamps, picks in held.values())
    stop = max(int(stamps[picks[-1]]) for stamps, picks in held.values()) + 1
    with _Library(bag, "cannot read its image messages"):
        for connection, stamp, raw in reader.messages(connections=[c for cs in connections.values() for c in cs],
                                                      start=start, stop=stop):
            topic = connection.topic
            if stamp not in wanted[topic]:
                continue
            frame = _decode_image(bag, topic, types[topic], _deserialize(reader, bag, topic, raw, connection.msgtype))
            if first_shape.setdefault(topic, frame.shape) != frame.shape:
                raise ConversionError(f"{bag}: topic {topic}: frames change size, {first_shape[topic][:2]} "
                                      f"then {frame.shape[:2]} at {stamp / 1e9:.9f} s")
            frames[topic].add(frame)
            done[topic] += 1
    for topic in connections:
        if done[topic] != len(wanted[topic]):
            raise ConversionError(f"{bag}: topic {topic}: read {done[topic]} of the {len(wanted[topic])} image "
                                  f"messages picked in the first pass; the bag changed while reading?")
    out = {}
    for topic, batch in frames.items():
        decoded = batch.array()
        # one message per step (a camera at least as fast as the grid) needs no second, indexed copy
        out[topic] = decoded if len(decoded) == len(rows[topic]) else decoded[rows[topic]]
    return out


def _decode_image(bag: Path, topic: str, msgtype: str, msg: Any) -> np.ndarray:
    """A sensor_msgs Image or CompressedImage -> (H, W, 3) uint8 RGB (possibly a view of the message)."""
    if msgtype == COMPRESSED_IMAGE:
        return _decode_compressed(bag, topic, msg)
    encoding = msg.encoding.lower()
    if encoding not in RAW_ENCODINGS:
        raise ConversionError(f"{bag}: topic {topic}: unsupported image encoding {msg.encoding!r}; supported: "
                              f"{', '.join(RAW_ENCODINGS)} (and JPEG/PNG CompressedImage)")
    channels = RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, np.uint8)
    if height < 1 or width < 1 or step < width * channels or len(data) < height * step:
        raise ConversionError(f"{bag}: topic {topic}: {encoding} image {height}x{width} with step {step} holds "
                              f"{len(data)} bytes; truncated or malformed")
    pixels = data[: height * step].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr"):
        return bgr_to_rgb(pixels)
    return pixels[..., :3]


def _decode_compressed(bag: Path, topic: str, msg: Any) -> np.ndarray:
    where = f"{bag}: topic {topic}: CompressedImage (format field {msg.format!r})"
    if "compresseddepth" in msg.format.lower():
        raise ConversionError(f"{where}: unsupported depth image; supported: JPEG and PNG colour or grey images")
    return decode_image(np.asarray(msg.data, np.uint8).tobytes(), where, formats=PIL_FORMATS)
