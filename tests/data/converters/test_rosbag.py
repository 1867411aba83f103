"""The rosbag converter on small real bags written with the rosbags writers (ROS 1 .bag, ROS 2 sqlite3 and mcap).

Every message carries its own index k in its values (vectors k + [0, 1, 2, ...]/8, frames with red = k), so a
test can tell exactly which message the zero-order hold picked at each grid step.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import Stores, get_typestore

from visual_lps.data.converters.common import ConversionError, ConvertOptions
from visual_lps.data.converters.rosbag import RosbagSource, find_bags
from visual_lps.data.robot_hdf5 import validate_hdf5

REPO = Path(__file__).resolve().parents[3]
BASE = 1_700_000_000 * 10**9
"""bag times start here (ns), like a wall clock"""
SEC = 10**9
KINDS = ("ros1", "sqlite3", "mcap")
TOPIC_ARGS = ["--rate", "10", "--image-topic", "front=/cam", "--state-topic", "joints=/joint_states",
              "--action-topic", "/cmd"]
TS2 = get_typestore(Stores.ROS2_HUMBLE)
TS1 = get_typestore(Stores.ROS1_NOETIC)


# ---------------------------------------------------------------------------------------------- bag making


class Bag:
    """A bag writer for any of KINDS with message factories for its typestore."""

    def __init__(self, path: Path, kind: str) -> None:
        self.kind, self.ts = kind, TS1 if kind == "ros1" else TS2
        if kind == "ros1":
            self.writer = Writer1(path)
        else:
            plugin = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
            self.writer = Writer2(path, version=9, storage_plugin=plugin)
        self.connections: dict[str, tuple[object, str]] = {}

    def __enter__(self) -> Bag:
        self.writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self.writer.close()

    def topic(self, name: str, msgtype: str) -> None:
        self.connections[name] = (self.writer.add_connection(name, msgtype, typestore=self.ts), msgtype)

    def write(self, name: str, t: int, msg: object) -> None:
        connection, msgtype = self.connections[name]
        raw = self.ts.serialize_ros1(msg, msgtype) if self.kind == "ros1" else self.ts.serialize_cdr(msg, msgtype)
        self.writer.write(connection, t, raw)

    # message factories
    def t(self, name: str) -> Callable:
        return self.ts.types[name]

    def header(self, t: int) -> object:
        stamp = self.t("builtin_interfaces/msg/Time")(sec=t // SEC, nanosec=t % SEC)
        if self.kind == "ros1":
            return self.t("std_msgs/msg/Header")(seq=0, stamp=stamp, frame_id="base")
        return self.t("std_msgs/msg/Header")(stamp=stamp, frame_id="base")

    def image(self, t: int, pixels: np.ndarray, encoding: str, pad: int = 0) -> object:
        h, w = pixels.shape[:2]
        rows = pixels.reshape(h, -1)
        data = np.concatenate([rows, np.full((h, pad), 77, np.uint8)], axis=1).reshape(-1)
        return self.t("sensor_msgs/msg/Image")(header=self.header(t), height=h, width=w, encoding=encoding,
                                               is_bigendian=0, step=rows.shape[1] + pad, data=data)

    def compressed(self, t: int, data: bytes, fmt: str) -> object:
        return self.t("sensor_msgs/msg/CompressedImage")(header=self.header(t), format=fmt,
                                                         data=np.frombuffer(data, np.uint8))

    def vector(self, msgtype: str, t: int, v: list[float]) -> object:
        vec3 = self.t("geometry_msgs/msg/Vector3")
        if msgtype == "sensor_msgs/msg/JointState":
            return self.t(msgtype)(header=self.header(t), name=[f"j{i}" for i in range(len(v))],
                                   position=np.array(v, np.float64), velocity=np.zeros(0), effort=np.zeros(0))
        if msgtype.endswith("MultiArray"):
            layout = self.t("std_msgs/msg/MultiArrayLayout")(dim=[], data_offset=0)
            dtype = np.float32 if "32" in msgtype else np.float64
            return self.t(msgtype)(layout=layout, data=np.array(v, dtype))
        if msgtype in ("std_msgs/msg/Float64", "std_msgs/msg/Float32"):
            return self.t(msgtype)(data=v[0])
        if msgtype.startswith("geometry_msgs/msg/Pose"):
            pose = self.t("geometry_msgs/msg/Pose")(position=self.t("geometry_msgs/msg/Point")(*v[:3]),
                                                    orientation=self.t("geometry_msgs/msg/Quaternion")(*v[3:7]))
            return pose if msgtype.endswith("Pose") else self.t(msgtype)(header=self.header(t), pose=pose)
        if msgtype.startswith("geometry_msgs/msg/Twist"):
            twist = self.t("geometry_msgs/msg/Twist")(linear=vec3(*v[:3]), angular=vec3(*v[3:6]))
            return twist if msgtype.endswith("Twist") else self.t(msgtype)(header=self.header(t), twist=twist)
        raise AssertionError(msgtype)


def values(k: int, dim: int) -> list[float]:
    """Message k's vector: exact in float32."""
    return [k + i / 8 for i in range(dim)]


def frame(k: int, size: int = 32) -> np.ndarray:
    """Message k's RGB frame: red = k, green = 255 - k, blue a horizontal ramp (so channel order shows)."""
    pixels = np.empty((size, size, 3), np.uint8)
    pixels[..., 0] = k % 256
    pixels[..., 1] = 255 - k % 256
    pixels[..., 2] = (np.arange(size) * 7 % 256)[None, :]
    return pixels


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


# camera 15 Hz from 0.03 s, joints 50 Hz from 0, actions 20 Hz from 0.11 s (offsets from BASE, in ns)
STREAMS = {"/cam": (15, 30_000_000), "/joint_states": (50, 0), "/cmd": (20, 110_000_000)}


def stamps(topic: str, seconds: float) -> list[int]:
    hz, offset = STREAMS[topic]
    return [BASE + offset + round(k * SEC / hz) for k in range(int(seconds * hz))]


def write_episode(path: Path, kind: str, seconds: float = 2.0, image: str = "rgb8",
                  state: str = "sensor_msgs/msg/JointState", action: str = "std_msgs/msg/Float32MultiArray",
                  size: int = 32) -> Path:
    """A teleop episode: /cam (image: a raw encoding, or PNG/JPEG compressed), /joint_states (7-D), /cmd (6-D)."""
    with Bag(path, kind) as bag:
        compressed = image in ("PNG", "JPEG")
        bag.topic("/cam", "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image")
        bag.topic("/joint_states", state)
        bag.topic("/cmd", action)
        bag.topic("/chatter", "std_msgs/msg/String")
        messages = [(t, "/cam", k) for k, t in enumerate(stamps("/cam", seconds))]
        messages += [(t, "/joint_states", k) for k, t in enumerate(stamps("/joint_states", seconds))]
        messages += [(t, "/cmd", k) for k, t in enumerate(stamps("/cmd", seconds))]
        for t, topic, k in sorted(messages):
            if topic == "/cam":
                pixels = frame(k, size)
                if compressed:
                    msg = bag.compressed(t, encode(pixels, image), image.lower())
                else:
                    msg = bag.image(t, pixels[..., ::-1] if image == "bgr8" else pixels, image)
            else:
                msg = bag.vector(state if topic == "/joint_states" else action, t, values(k, 7 if topic ==
                                                                                          "/joint_states" else 6))
            bag.write(topic, t, msg)
        bag.write("/chatter", BASE, bag.t("std_msgs/msg/String")(data="hello"))
    return path


def expected_picks(seconds: float, rate: float = 10.0) -> dict[str, list[int]]:
    """For each topic, the index of the message held at each grid step (computed naively)."""
    times = {topic: stamps(topic, seconds) for topic in STREAMS}
    start, end = max(t[0] for t in times.values()), min(t[-1] for t in times.values())
    grid = []
    while start + round(len(grid) * SEC / rate) <= end:
        grid.append(start + round(len(grid) * SEC / rate))
    return {topic: [max(k for k, s in enumerate(t) if s <= g) for g in grid] for topic, t in times.items()}


def read_episodes(src: Path, opts: ConvertOptions) -> list:
    return list(RosbagSource(src, opts).episodes())


def options(**kw) -> ConvertOptions:
    return ConvertOptions(**({"rate": 10.0, "image_topics": {"front": "/cam"}, "state_topics":
                              {"joints": "/joint_states"}, "action_topic": "/cmd"} | kw))


def load_cli():
    spec = importlib.util.spec_from_file_location("convert_teleop", REPO / "tools" / "convert_teleop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = load_cli()


def cli_error(src: Path, out_dir: Path, *args: str) -> str:
    """Run the CLI in-process expecting a failure; return its message after checking it left no file."""
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(SystemExit) as failure:
        CLI.main(["--format", "rosbag", str(src), str(out_dir / "robot.hdf5"), *args])
    assert list(out_dir.iterdir()) == [], "a failed conversion left files (output or .*.tmp)"
    message = str(failure.value.code)
    assert message.startswith("error: ")
    return message


# ------------------------------------------------------------------------------------------------- dataset

SECONDS = {"failure/b_mcap": 1.5, "success/a_sqlite": 2.0, "success/c.bag": 2.5}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """success/a_sqlite (ROS 2 sqlite3, rgb8, JointState, Float32MultiArray), failure/b_mcap (ROS 2 mcap, PNG,
    PoseStamped, Twist), success/c.bag (ROS 1, bgr8, JointState, Float64MultiArray)."""
    root = tmp_path_factory.mktemp("bags")
    (root / "success").mkdir()
    (root / "failure").mkdir()
    write_episode(root / "success/a_sqlite", "sqlite3", SECONDS["success/a_sqlite"])
    write_episode(root / "failure/b_mcap", "mcap", SECONDS["failure/b_mcap"], image="PNG",
                  state="geometry_msgs/msg/PoseStamped", action="geometry_msgs/msg/Twist")
    write_episode(root / "success/c.bag", "ros1", SECONDS["success/c.bag"], image="bgr8",
                  action="std_msgs/msg/Float64MultiArray")
    return root


def check_episode(demo: h5py.Group, seconds: float, camera: str = "front") -> None:
    picks = expected_picks(seconds)
    n = len(picks["/cam"])
    assert demo["actions"].shape == (n, 6)
    np.testing.assert_array_equal(demo["actions"][()], [values(k, 6) for k in picks["/cmd"]])
    np.testing.assert_array_equal(demo["obs/joints"][()], [values(k, 7) for k in picks["/joint_states"]])
    np.testing.assert_array_equal(demo[f"obs/{camera}_image"][()], [frame(k) for k in picks["/cam"]])


def test_cli_converts_a_folder_of_ros1_and_ros2_bags(dataset: Path, tmp_path: Path):
    out = tmp_path / "robot.hdf5"
    result = subprocess.run([sys.executable, "tools/convert_teleop.py", "--format", "rosbag", str(dataset),
                             str(out), *TOPIC_ARGS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = validate_hdf5(out)
    assert summary.episodes == 3
    # 1.5 s bag: grid 0.11 .. 1.4967 s at 10 Hz = 14 steps; 2 s: 19; 2.5 s: 24
    assert [len(expected_picks(s)["/cam"]) for s in SECONDS.values()] == [14, 19, 24]
    assert summary.frames == 14 + 19 + 24
    assert summary.cameras == {"front": (32, 32, 3)} and summary.proprio == {"joints": 7}
    assert summary.env_args["control_rate_hz"] == 10.0
    assert summary.env_args["action_topic"] == "/cmd" and summary.env_args["timestamps"] == "bag receive time"
    with h5py.File(out) as f:
        for i, (name, seconds) in enumerate(SECONDS.items()):  # in path order: failure/ sorts first
            demo = f[f"data/demo_{i}"]
            assert bool(demo.attrs["success"]) == name.startswith("success")
            check_episode(demo, seconds)


def test_zero_order_hold_picks_the_latest_message_at_or_before_each_step(dataset: Path):
    (episode,) = read_episodes(dataset / "success/a_sqlite", options())
    picks = expected_picks(2.0)
    assert len(episode.actions) == 19
    # grid 0.11, 0.21, ... s: camera frames at 0.03 + k/15, joints every 0.02 s (one lands exactly on 0.11)
    assert picks["/cam"][:4] == [1, 2, 4, 5] and picks["/joint_states"][:3] == [5, 10, 15]
    assert picks["/cmd"][:3] == [0, 2, 4]
    np.testing.assert_array_equal(episode.images["front"][:, 0, 0, 0], picks["/cam"])
    np.testing.assert_array_equal(episode.proprio["joints"][:, 0], picks["/joint_states"])
    np.testing.assert_array_equal(episode.actions[:, 0], picks["/cmd"])
    assert episode.source == str(dataset / "success/a_sqlite") and episode.success


@pytest.mark.parametrize("kind", KINDS)
def test_a_single_bag_is_one_episode_with_the_default_success(kind: str, tmp_path: Path):
    src = write_episode(tmp_path / ("ep.bag" if kind == "ros1" else "ep"), kind, 1.0)
    assert find_bags(src) == [(src, None)] and len(RosbagSource(src, options())) == 1
    (episode,) = read_episodes(src, options(default_success=False))
    assert not episode.success and len(episode.actions) == len(expected_picks(1.0)["/cam"]) == 9


def test_bare_mcap_and_db3_files_are_bags(dataset: Path):
    for folder in ("failure/b_mcap", "success/a_sqlite"):
        (storage,) = [p for p in (dataset / folder).iterdir() if p.suffix in (".mcap", ".db3")]
        (episode,) = read_episodes(storage, options())
        assert len(episode.actions) == len(expected_picks(SECONDS[folder])["/cam"])


def test_folder_without_success_split_uses_the_default(dataset: Path, tmp_path: Path):
    for i, kind in enumerate(KINDS):
        write_episode(tmp_path / f"ep{i}{'.bag' if kind == 'ros1' else ''}", kind, 1.0)
    (tmp_path / "notes.txt").write_text("not a bag")
    assert [p.name for p, _ in find_bags(tmp_path)] == ["ep0.bag", "ep1", "ep2"]
    assert [e.success for e in read_episodes(tmp_path, options(default_success=False))] == [False] * 3


def test_camera_renaming_and_resize(dataset: Path, tmp_path: Path):
    out = tmp_path / "robot.hdf5"
    CLI.main(["--format", "rosbag", str(dataset / "success"), str(out), *TOPIC_ARGS, "--camera", "front=wrist",
              "--resize", "16x24", "--compression", "lzf"])
    summary = validate_hdf5(out)
    assert summary.cameras == {"wrist": (16, 24, 3)} and summary.episodes == 2
    with h5py.File(out) as f:
        frames = f["data/demo_0/obs/wrist_image"][()]
    # red and green are constant per frame, so they survive resizing exactly
    picks = expected_picks(2.0)["/cam"]
    np.testing.assert_array_equal(frames[:, :, :, 0], np.broadcast_to(np.array(picks)[:, None, None], (19, 16, 24)))
    np.testing.assert_array_equal(frames[:, :, :, 1], 255 - frames[:, :, :, 0])


def test_resize_matches_resizing_the_whole_episode(dataset: Path):
    from visual_lps.data.converters.common import resize_frames

    (full,) = read_episodes(dataset / "success/a_sqlite", options())
    (small,) = read_episodes(dataset / "success/a_sqlite", options(resize=(20, 12)))
    np.testing.assert_array_equal(small.images["front"], resize_frames(full.images["front"], (20, 12)))


def test_image_encodings(tmp_path: Path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    smooth = np.stack([*np.meshgrid(np.arange(20) * 10, np.arange(12) * 20), np.full((12, 20), 128)], -1)
    smooth = smooth.astype(np.uint8)
    grey = pixels[..., 1]
    alpha = np.full((12, 20, 1), 200, np.uint8)
    raw = {"rgb8": pixels, "bgr8": pixels[..., ::-1], "rgba8": np.concatenate([pixels, alpha], -1),
           "bgra8": np.concatenate([pixels[..., ::-1], alpha], -1), "mono8": grey[..., None]}
    path = tmp_path / "enc"
    with Bag(path, "sqlite3") as bag:
        for name in [*raw, "padded", "png", "png_grey", "jpeg"]:
            bag.topic(f"/{name}", "sensor_msgs/msg/" + ("Image" if name in raw or name == "padded" else
                                                        "CompressedImage"))
        bag.topic("/cmd", "std_msgs/msg/Float64")
        for t in (BASE, BASE + SEC // 10):
            for encoding, data in raw.items():
                bag.write(f"/{encoding}", t, bag.image(t, data, encoding))
            bag.write("/padded", t, bag.image(t, pixels, "rgb8", pad=3))
            bag.write("/png", t, bag.compressed(t, encode(pixels, "PNG"), "png"))
            bag.write("/png_grey", t, bag.compressed(t, encode(grey, "PNG"), "mono8; png compressed mono8"))
            bag.write("/jpeg", t, bag.compressed(t, encode(smooth, "JPEG"), "rgb8; jpeg compressed bgr8"))
            bag.write("/cmd", t, bag.vector("std_msgs/msg/Float64", t, [0.5]))
    topics = {name: f"/{name}" for name in [*raw, "padded", "png", "png_grey", "jpeg"]}
    (episode,) = read_episodes(path, ConvertOptions(rate=10, image_topics=topics, action_topic="/cmd"))
    assert len(episode.actions) == 2 and episode.actions.tolist() == [[0.5], [0.5]]
    for name in ["rgb8", "bgr8", "rgba8", "bgra8", "padded", "png"]:
        np.testing.assert_array_equal(episode.images[name], np.stack([pixels] * 2), err_msg=name)
    for name in ["mono8", "png_grey"]:
        np.testing.assert_array_equal(episode.images[name], np.stack([np.repeat(grey[..., None], 3, -1)] * 2))
    assert np.abs(episode.images["jpeg"].astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("kind", ["sqlite3", "ros1"])
def test_vector_message_kinds(kind: str, tmp_path: Path):
    kinds = {"joint": ("sensor_msgs/msg/JointState", 4), "f32": ("std_msgs/msg/Float32MultiArray", 3),
             "f64": ("std_msgs/msg/Float64MultiArray", 2), "scalar": ("std_msgs/msg/Float64", 1),
             "pose_stamped": ("geometry_msgs/msg/PoseStamped", 7), "pose": ("geometry_msgs/msg/Pose", 7),
             "twist": ("geometry_msgs/msg/Twist", 6), "twist_stamped": ("geometry_msgs/msg/TwistStamped", 6)}
    path = tmp_path / ("v.bag" if kind == "ros1" else "v")
    with Bag(path, kind) as bag:
        for name, (msgtype, _) in kinds.items():
            bag.topic(f"/{name}", msgtype)
        for k in range(5):
            for name, (msgtype, dim) in kinds.items():
                bag.write(f"/{name}", BASE + k * SEC // 10, bag.vector(msgtype, BASE + k * SEC // 10, values(k, dim)))
    opts = ConvertOptions(rate=10, state_topics={name: f"/{name}" for name in kinds}, action_topic="/twist")
    (episode,) = read_episodes(path, opts)
    assert len(episode.actions) == 5
    for name, (_, dim) in kinds.items():
        np.testing.assert_array_equal(episode.proprio[name], [values(k, dim) for k in range(5)], err_msg=name)
    np.testing.assert_array_equal(episode.actions, [values(k, 6) for k in range(5)])


def test_source_facts(dataset: Path):
    facts = RosbagSource(dataset, options(cameras={"front": "wrist"})).facts()
    assert facts == {"control_rate_hz": 10.0, "image_topics": {"wrist": "/cam"},
                     "state_topics": {"joints": "/joint_states"}, "action_topic": "/cmd",
                     "timestamps": "bag receive time", "resampling": "zero-order hold"}


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_topic_is_named_with_the_available_ones(dataset: Path, tmp_path: Path):
    bag = dataset / "success/c.bag"
    message = cli_error(bag, tmp_path / "out", "--rate", "10", "--image-topic", "front=/cam", "--state-topic",
                        "joints=/joint_states", "--action-topic", "/robot/command")
    assert str(bag) in message and "/robot/command" in message and "not found" in message
    assert "/joint_states (sensor_msgs/msg/JointState)" in message and "/chatter (std_msgs/msg/String)" in message


def test_missing_topic_in_a_later_bag_leaves_no_output(dataset: Path, tmp_path: Path):
    src = tmp_path / "bags"
    src.mkdir()
    write_episode(src / "a", "sqlite3", 1.0)
    with Bag(src / "b", "mcap") as bag:  # no /cmd
        bag.topic("/cam", "sensor_msgs/msg/Image")
        bag.write("/cam", BASE, bag.image(BASE, frame(0), "rgb8"))
    message = cli_error(src, tmp_path / "out", *TOPIC_ARGS)
    assert str(src / "b") in message and "/cam (sensor_msgs/msg/Image)" in message
    assert "/joint_states (chosen by --state-topic joints), /cmd (chosen by --action-topic) not found" in message


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_or_corrupt_bag(kind: str, tmp_path: Path):
    src = write_episode(tmp_path / ("ep.bag" if kind == "ros1" else "ep"), kind, 1.0)
    (storage,) = [src] if kind == "ros1" else [p for p in src.iterdir() if p.suffix in (".db3", ".mcap")]
    data = storage.read_bytes()
    storage.write_bytes(data[: len(data) // 2])
    message = cli_error(src, tmp_path / "out", *TOPIC_ARGS)
    assert str(src) in message and ("corrupt or truncated" in message or "cannot" in message)


def test_garbage_bag_file(tmp_path: Path):
    src = tmp_path / "junk.bag"
    src.write_bytes(b"#ROSBAG V2.0\n" + bytes(range(256)) * 8)
    message = cli_error(src, tmp_path / "out", *TOPIC_ARGS)
    assert str(src) in message and "corrupt or truncated" in message


def test_unsupported_message_type(dataset: Path, tmp_path: Path):
    bag = dataset / "success/a_sqlite"
    message = cli_error(bag, tmp_path / "out", "--rate", "10", "--state-topic", "chat=/chatter",
                        "--action-topic", "/cmd")
    assert str(bag) in message and "/chatter" in message and "unsupported message type std_msgs/msg/String" in message


@pytest.mark.parametrize("case", ["16UC1", "compressedDepth", "BMP", "garbage"])
def test_unsupported_or_broken_image(case: str, tmp_path: Path):
    src = tmp_path / "ep"
    with Bag(src, "sqlite3") as bag:
        bag.topic("/cam", "sensor_msgs/msg/Image" if case == "16UC1" else "sensor_msgs/msg/CompressedImage")
        bag.topic("/cmd", "std_msgs/msg/Float64")
        for t in (BASE, BASE + SEC):
            if case == "16UC1":
                msg = bag.image(t, np.zeros((4, 4, 2), np.uint8), "16UC1")
            elif case == "compressedDepth":
                msg = bag.compressed(t, encode(np.zeros((4, 4), np.uint8), "PNG"), "16UC1; compressedDepth png")
            elif case == "BMP":
                msg = bag.compressed(t, encode(frame(0, 4), "BMP"), "bmp")
            else:
                msg = bag.compressed(t, b"\xff\xd8 not really a jpeg", "jpeg")
            bag.write("/cam", t, msg)
            bag.write("/cmd", t, bag.vector("std_msgs/msg/Float64", t, [1.0]))
    message = cli_error(src, tmp_path / "out", "--rate", "10", "--image-topic", "front=/cam", "--action-topic", "/cmd")
    assert str(src) in message and "/cam" in message
    assert ("cannot decode" if case == "garbage" else "unsupported") in message
    assert {"16UC1": "'16UC1'", "compressedDepth": "depth", "BMP": "BMP", "garbage": "jpeg"}[case] in message


@pytest.mark.parametrize("kind", ["sqlite3", "ros1"])
def test_topic_without_messages(kind: str, tmp_path: Path):
    src = tmp_path / ("ep.bag" if kind == "ros1" else "ep")
    with Bag(src, kind) as bag:
        bag.topic("/joint_states", "sensor_msgs/msg/JointState")
        bag.topic("/cmd", "std_msgs/msg/Float32MultiArray")
        for k in range(10):
            bag.write("/joint_states", BASE + k * SEC // 10, bag.vector("sensor_msgs/msg/JointState", 0, values(k, 7)))
    message = cli_error(src, tmp_path / "out", "--rate", "10", "--state-topic", "joints=/joint_states",
                        "--action-topic", "/cmd")
    assert str(src) in message and "/cmd" in message and "no messages" in message


def test_repeated_timestamps_on_a_topic(tmp_path: Path):
    src = tmp_path / "ep"
    with Bag(src, "sqlite3") as bag:
        bag.topic("/joint_states", "sensor_msgs/msg/JointState")
        bag.topic("/cmd", "std_msgs/msg/Float32MultiArray")
        for k, t in enumerate([0, 1, 2, 2, 3]):  # two messages at 0.2 s
            stamp = BASE + t * SEC // 10
            bag.write("/joint_states", stamp, bag.vector("sensor_msgs/msg/JointState", stamp, values(k, 7)))
            bag.write("/cmd", BASE + k * SEC // 10, bag.vector("std_msgs/msg/Float32MultiArray", 0, values(k, 6)))
    message = cli_error(src, tmp_path / "out", "--rate", "10", "--state-topic", "joints=/joint_states",
                        "--action-topic", "/cmd")
    assert str(src) in message and "/joint_states" in message and "not strictly increasing" in message


def test_topics_that_never_overlap_are_an_empty_episode(tmp_path: Path):
    src = tmp_path / "ep"
    with Bag(src, "mcap") as bag:
        bag.topic("/cam", "sensor_msgs/msg/Image")
        bag.topic("/cmd", "std_msgs/msg/Float32MultiArray")
        for k in range(10):  # camera during 0-0.9 s, actions during 1.5-2.4 s
            bag.write("/cam", BASE + k * SEC // 10, bag.image(0, frame(k), "rgb8"))
        for k in range(10):
            bag.write("/cmd", BASE + 3 * SEC // 2 + k * SEC // 10, bag.vector("std_msgs/msg/Float32MultiArray", 0,
                                                                            values(k, 6)))
    message = cli_error(src, tmp_path / "out", "--rate", "10", "--image-topic", "front=/cam", "--action-topic", "/cmd")
    assert str(src) in message and "empty episode" in message and "never overlap" in message


def test_missing_rate(dataset: Path, tmp_path: Path):
    bag = dataset / "success/c.bag"
    message = cli_error(bag, tmp_path / "out", *[a for a in TOPIC_ARGS if a not in ("--rate", "10")])
    assert str(bag) in message and "--rate" in message


def test_bad_options_are_refused_before_reading(dataset: Path, tmp_path: Path):
    src = dataset / "success/a_sqlite"
    assert "--action-topic" in cli_error(src, tmp_path / "o1", "--rate", "10", "--image-topic", "front=/cam")
    assert "cannot be an HDF5 key" in cli_error(src, tmp_path / "o2", "--rate", "10", "--image-topic", "/cam",
                                                "--action-topic", "/cmd")
    assert "['side'] not found" in cli_error(src, tmp_path / "o3", *TOPIC_ARGS, "--camera", "side")
    assert "--rate" in cli_error(src, tmp_path / "o4", *TOPIC_ARGS[2:], "--rate", "0")
    with pytest.raises(ConversionError, match="no rosbags found"):
        RosbagSource(tmp_path / "o1", options())


def test_vectors_of_changing_size(tmp_path: Path):
    src = tmp_path / "ep"
    with Bag(src, "sqlite3") as bag:  # an arm and a gripper publishing on one /joint_states
        bag.topic("/joint_states", "sensor_msgs/msg/JointState")
        for k in range(6):
            stamp = BASE + k * SEC // 10
            msg = bag.vector("sensor_msgs/msg/JointState", stamp, values(k, 7 if k % 2 == 0 else 2))
            bag.write("/joint_states", stamp, msg)
    with pytest.raises(ConversionError, match=r"different sizes \[2, 7\]") as failure:
        list(read_episodes(src, ConvertOptions(rate=10, state_topics={"j": "/joint_states"},
                                               action_topic="/joint_states")))
    assert str(src) in str(failure.value)
