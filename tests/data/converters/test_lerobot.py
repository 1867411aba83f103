"""The LeRobot converter on small real LeRobot datasets (v2.1 and v3.0 layouts) written here with pyarrow and PyAV."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import av
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from visual_lps.data.converters.common import ConversionError, ConvertOptions
from visual_lps.data.converters.lerobot import LeRobotSource
from visual_lps.data.robot_hdf5 import validate_hdf5

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("convert_teleop_cli", REPO / "tools" / "convert_teleop.py")
convert_teleop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_teleop)

VIDEO_KEY = "observation.images.front"
IMAGE_KEY = "observation.images.wrist"
FPS = 10
LAYOUTS = ("v2.1", "v3.0")


# ---------------------------------------------------------------------------------------------- dataset builder


@dataclass
class Written:
    """A LeRobot dataset written to `root`, with what every episode holds."""

    root: Path
    version: str
    actions: list[np.ndarray] = field(default_factory=list)
    state: list[np.ndarray] = field(default_factory=list)
    env_state: list[np.ndarray] = field(default_factory=list)
    front: list[np.ndarray] = field(default_factory=list)
    wrist: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    success: list[bool] = field(default_factory=list)

    def data_file(self, episode: int) -> Path:
        if self.version == "v2.1":
            return self.root / f"data/chunk-000/episode_{episode:06d}.parquet"
        return self.root / f"data/chunk-000/file-{0 if episode < 2 else 1:03d}.parquet"

    def video_file(self, episode: int) -> Path:
        if self.version == "v2.1":
            return self.root / f"videos/chunk-000/{VIDEO_KEY}/episode_{episode:06d}.mp4"
        return self.root / f"videos/{VIDEO_KEY}/chunk-000/file-000.mp4"


def front_frame(episode: int, frame: int, size: tuple[int, int]) -> np.ndarray:
    """A constant colour naming the episode (green) and the frame (red): smooth, so a lossy codec keeps it."""
    image = np.empty((*size, 3), np.uint8)
    image[...] = ((20 * frame + 10) % 250, (40 * episode + 40) % 250, 128)
    return image


def encode_video(path: Path, frames: list[np.ndarray], fps: int = FPS, codec: str = "mpeg4") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.options = {"qscale": "2"}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def features(size: tuple[int, int], image_camera: bool, with_outcomes: bool) -> dict:
    def vector(n: int, dtype: str = "float32") -> dict:
        return {"dtype": dtype, "shape": [n], "names": None}

    video_info = {"video.height": size[0], "video.width": size[1], "video.codec": "mpeg4", "video.pix_fmt": "yuv420p",
                  "video.fps": FPS, "video.channels": 3, "has_audio": False}
    result = {
        VIDEO_KEY: {"dtype": "video", "shape": [size[0], size[1], 3], "names": ["height", "width", "channels"],
                    "info": video_info},
        "observation.state": {"dtype": "float32", "shape": [6], "names": [f"joint_{i}" for i in range(6)]},
        "observation.environment_state": vector(2),
        "action": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
        "timestamp": vector(1), "frame_index": vector(1, "int64"), "episode_index": vector(1, "int64"),
        "index": vector(1, "int64"), "task_index": vector(1, "int64"),
    }
    if image_camera:
        result[IMAGE_KEY] = {"dtype": "image", "shape": [size[0], size[1], 3], "names": ["height", "width", "channel"]}
    if with_outcomes:
        result |= {"next.reward": vector(1), "next.done": vector(1, "bool"), "next.success": vector(1, "bool")}
    return result


def frames_table(written: Written, episodes: list[int], image_camera: bool, with_outcomes: bool,
                 first_index: int) -> pa.Table:
    lists = lambda arrays: pa.array([row.tolist() for a in arrays for row in a], pa.list_(pa.float32()))  # noqa: E731
    lengths = [len(written.actions[e]) for e in episodes]
    columns = {
        "observation.state": lists([written.state[e] for e in episodes]),
        "observation.environment_state": lists([written.env_state[e] for e in episodes]),
        "action": lists([written.actions[e] for e in episodes]),
        "timestamp": pa.array([i / FPS for n in lengths for i in range(n)], pa.float32()),
        "frame_index": pa.array([i for n in lengths for i in range(n)], pa.int64()),
        "episode_index": pa.array([e for e, n in zip(episodes, lengths) for _ in range(n)], pa.int64()),
        "index": pa.array(range(first_index, first_index + sum(lengths)), pa.int64()),
        "task_index": pa.array([0] * sum(lengths), pa.int64()),
    }
    if image_camera:
        structs = [{"bytes": png(image), "path": f"frame_{i:06d}.png"}
                   for e in episodes for i, image in enumerate(written.wrist[e])]
        columns[IMAGE_KEY] = pa.array(structs, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    if with_outcomes:
        columns["next.reward"] = pa.array(np.concatenate([written.rewards[e] for e in episodes]), pa.float32())
        done = [i == n - 1 for n in lengths for i in range(n)]
        columns["next.done"] = pa.array(done)
        columns["next.success"] = pa.array([d and written.success[e] for e, n in zip(episodes, lengths)
                                            for d in [i == n - 1 for i in range(n)]])
    return pa.table(columns)


def write_dataset(root: Path, version: str, episodes: int = 3, length: int = 12, size: tuple[int, int] = (32, 32),
                  image_camera: bool = True, with_outcomes: bool = True, codec: str = "mpeg4",
                  seed: int = 0) -> Written:
    """A LeRobot `version` ('v2.1' or 'v3.0') dataset with one mp4 camera (VIDEO_KEY), optionally one parquet
    PNG camera (IMAGE_KEY), state, environment state, 4-D actions and, optionally, next.reward/done/success.
    v3.0 puts episodes 0-1 in data file-000 and the rest in file-001, and every episode in one video file."""
    rng = np.random.default_rng(seed)
    written = Written(root, version)
    for e in range(episodes):
        written.actions.append(rng.uniform(-1, 1, (length, 4)).astype(np.float32))
        written.state.append(rng.normal(size=(length, 6)).astype(np.float32))
        written.env_state.append(rng.normal(size=(length, 2)).astype(np.float32))
        written.front.append(np.stack([front_frame(e, i, size) for i in range(length)]))
        written.wrist.append(rng.integers(0, 256, (length, *size, 3), dtype=np.uint8) if image_camera else None)
        rewards = np.zeros(length, np.float32)
        rewards[-1] = float(e != 1)
        written.rewards.append(rewards)
        written.success.append(e != 1)
    info = {
        "codebase_version": version, "robot_type": "so100", "total_episodes": episodes,
        "total_frames": episodes * length, "total_tasks": 1, "chunks_size": 1000, "fps": FPS,
        "splits": {"train": f"0:{episodes}"},
        "features": features(size, image_camera, with_outcomes),
    }
    (root / "meta").mkdir(parents=True, exist_ok=True)
    if version == "v2.1":
        info |= {"total_videos": episodes, "total_chunks": 1,
                 "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                 "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
        for e in range(episodes):
            written.data_file(e).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(frames_table(written, [e], image_camera, with_outcomes, e * length), written.data_file(e))
            encode_video(written.video_file(e), list(written.front[e]), codec=codec)
        lines = [json.dumps({"episode_index": e, "tasks": ["pick the cube"], "length": length})
                 for e in range(episodes)]
        (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
        (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "pick the cube"}) + "\n")
    elif version == "v3.0":
        info |= {"data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
                 "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                 "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
        files = [list(range(min(2, episodes))), list(range(2, episodes))]
        for members in (f for f in files if f):
            path = written.data_file(members[0])
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(frames_table(written, members, image_camera, with_outcomes, members[0] * length), path)
        encode_video(written.video_file(0), [f for e in range(episodes) for f in written.front[e]], codec=codec)
        rows = {
            "episode_index": list(range(episodes)), "tasks": [["pick the cube"]] * episodes,
            "length": [length] * episodes,
            "data/chunk_index": [0] * episodes, "data/file_index": [0 if e < 2 else 1 for e in range(episodes)],
            "dataset_from_index": [e * length for e in range(episodes)],
            "dataset_to_index": [(e + 1) * length for e in range(episodes)],
            f"videos/{VIDEO_KEY}/chunk_index": [0] * episodes, f"videos/{VIDEO_KEY}/file_index": [0] * episodes,
            f"videos/{VIDEO_KEY}/from_timestamp": [e * length / FPS for e in range(episodes)],
            f"videos/{VIDEO_KEY}/to_timestamp": [(e + 1) * length / FPS for e in range(episodes)],
            "meta/episodes/chunk_index": [0] * episodes, "meta/episodes/file_index": [0] * episodes,
        }
        episodes_file = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        episodes_file.parent.mkdir(parents=True)
        pq.write_table(pa.table(rows), episodes_file)
        pq.write_table(pa.table({"task_index": [0], "task": ["pick the cube"]}), root / "meta" / "tasks.parquet")
    else:
        raise ValueError(version)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return written


@pytest.fixture(scope="module", params=LAYOUTS)
def dataset(request, tmp_path_factory: pytest.TempPathFactory) -> Written:
    return write_dataset(tmp_path_factory.mktemp(f"lerobot_{request.param}"), request.param)


def copy_of(written: Written, tmp_path: Path) -> Written:
    copy = Written(**{**written.__dict__, "root": tmp_path / "src"})
    shutil.copytree(written.root, copy.root)
    return copy


def rewrite_parquet(path: Path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def run_cli(src: Path, out: Path, *flags: str) -> None:
    convert_teleop.main(["--format", "lerobot", str(src), str(out), "--compression", "lzf", *flags])


# ---------------------------------------------------------------------------------------------- conversions


def test_cli_round_trip(dataset: Written, tmp_path: Path, capsys):
    out = tmp_path / "out" / "robot.hdf5"
    run_cli(dataset.root, out, "--rewards", "source")
    assert "valid" in capsys.readouterr().out
    summary = validate_hdf5(out)
    assert (summary.episodes, summary.frames) == (3, 36)
    assert summary.cameras == {"front": (32, 32, 3), "wrist": (32, 32, 3)}
    assert summary.proprio == {"state": 6, "environment_state": 2}
    assert summary.action_dim == 4
    facts = summary.env_args
    assert facts["control_rate_hz"] == FPS and facts["lerobot_version"] == dataset.version
    assert facts["robot_type"] == "so100" and facts["action_names"] == ["x", "y", "z", "gripper"]
    assert facts["source_format"] == "lerobot"
    with h5py.File(out) as f:
        for e in range(3):
            demo = f[f"data/demo_{e}"]
            np.testing.assert_array_equal(demo["actions"][()], dataset.actions[e])
            np.testing.assert_array_equal(demo["obs/state"][()], dataset.state[e])
            np.testing.assert_array_equal(demo["obs/environment_state"][()], dataset.env_state[e])
            np.testing.assert_array_equal(demo["obs/wrist_image"][()], dataset.wrist[e])  # PNG: lossless
            np.testing.assert_array_equal(demo["rewards"][()], dataset.rewards[e])
            assert bool(demo.attrs["success"]) == dataset.success[e]
            front = demo["obs/front_image"][()].astype(np.float64)
            assert np.abs(front - dataset.front[e]).mean() < 10
            # every row shows its own frame: the nearest encoded colour is that row's
            colours = front.mean(axis=(1, 2))
            expected = dataset.front[e][:, 0, 0].astype(np.float64)
            nearest = np.abs(colours[:, None, 0] - expected[None, :, 0]).argmin(axis=1)
            assert nearest.tolist() == list(range(12))
    assert sorted(p.name for p in out.parent.iterdir()) == ["robot.hdf5"]


def test_camera_choice_rename_and_resize(dataset: Written, tmp_path: Path):
    out = tmp_path / "robot.hdf5"
    run_cli(dataset.root, out, "--camera", f"{VIDEO_KEY}=cam0", "--camera", "wrist", "--resize", "16x24")
    summary = validate_hdf5(out)
    assert summary.cameras == {"cam0": (16, 24, 3), "wrist": (16, 24, 3)}
    with h5py.File(out) as f:
        front = f["data/demo_2/obs/cam0_image"][()].astype(np.float64)
    assert np.abs(front - dataset.front[2][:, :16, :24]).mean() < 10  # constant colours survive resizing


def test_camera_short_name_and_full_key_alone_keep_short_names(dataset: Written):
    for requested in ("front", VIDEO_KEY):
        episodes = list(LeRobotSource(dataset.root, ConvertOptions(cameras={requested: requested})).episodes())
        assert len(episodes) == 3 and set(episodes[0].images) == {"front"}


def test_unknown_camera_names_info_and_choices(dataset: Written, tmp_path: Path):
    out = tmp_path / "robot.hdf5"
    with pytest.raises(SystemExit) as error:
        run_cli(dataset.root, out, "--camera", "top")
    message = str(error.value.code)
    assert "info.json" in message and "'top'" in message and VIDEO_KEY in message
    assert not list(tmp_path.iterdir())


def test_api_count_facts_and_episode_contents(dataset: Written):
    options = ConvertOptions()
    source = LeRobotSource(dataset.root, options)
    assert len(source) == 3
    facts = source.facts()
    assert facts["control_rate_hz"] == FPS and facts["lerobot_version"] == dataset.version
    assert VIDEO_KEY in facts["features"] and facts["camera_sources"] == {VIDEO_KEY: "front", IMAGE_KEY: "wrist"}
    json.dumps(facts)
    episodes = list(source.episodes())
    assert [e.success for e in episodes] == [True, False, True]
    assert all(e.rewards is not None and e.rewards.dtype == np.float32 for e in episodes)
    assert all(str(dataset.data_file(i)) in e.source for i, e in enumerate(episodes))
    assert episodes[0].images["front"].dtype == np.uint8 and episodes[0].actions.dtype == np.float32


def test_without_outcome_columns_uses_default_success(tmp_path: Path):
    written = write_dataset(tmp_path / "src", "v3.0", episodes=2, length=5, image_camera=False, with_outcomes=False)
    for default in (True, False):
        episodes = list(LeRobotSource(written.root, ConvertOptions(default_success=default)).episodes())
        assert [e.success for e in episodes] == [default, default]
        assert all(e.rewards is None for e in episodes) and set(episodes[0].images) == {"front"}


def test_libx264_video(tmp_path: Path):
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV here has no libx264")
    written = write_dataset(tmp_path / "src", "v3.0", episodes=2, length=6, image_camera=False, codec="libx264")
    episodes = list(LeRobotSource(written.root, ConvertOptions()).episodes())
    for e, episode in enumerate(episodes):
        assert np.abs(episode.images["front"].astype(np.float64) - written.front[e]).mean() < 10


# ---------------------------------------------------------------------------------------------- bad input


def expect_failure(src: Path, tmp_path: Path, *names: str) -> str:
    """Run the CLI, expect an error naming every one of `names`, and that no output (nor temporary file) is left."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(SystemExit) as error:
        run_cli(src, out_dir / "robot.hdf5")
    message = str(error.value.code)
    assert message.startswith("error: ")
    for name in names:
        assert name in message, (name, message)
    assert not list(out_dir.iterdir()), list(out_dir.iterdir())
    return message


def test_missing_info_json(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    (bad.root / "meta" / "info.json").unlink()
    expect_failure(bad.root, tmp_path, str(bad.root / "meta" / "info.json"), "missing")


def test_unsupported_codebase_version(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    info_path = bad.root / "meta" / "info.json"
    info_path.write_text(json.dumps(json.loads(info_path.read_text()) | {"codebase_version": "v1.6"}))
    expect_failure(bad.root, tmp_path, str(info_path), "'v1.6'", "not supported")


def test_missing_parquet(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    bad.data_file(2).unlink()
    expect_failure(bad.root, tmp_path, str(bad.data_file(2)), "missing parquet")


def test_missing_video(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    bad.video_file(1).unlink()
    expect_failure(bad.root, tmp_path, str(bad.video_file(1)), "missing video")


def test_missing_action_column(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    rewrite_parquet(bad.data_file(2), lambda table: table.drop_columns(["action"]))
    expect_failure(bad.root, tmp_path, str(bad.data_file(2)), "'action'")


def test_truncated_video(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    video = bad.video_file(1)
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    expect_failure(bad.root, tmp_path, str(video), "cannot decode")


def test_video_shorter_than_episode(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    if dataset.version == "v2.1":
        encode_video(bad.video_file(1), list(bad.front[1][:8]))
    else:  # the last episode loses its last 4 frames in the concatenated file
        encode_video(bad.video_file(2), [f for e in range(3) for f in bad.front[e]][:-4])
    message = expect_failure(bad.root, tmp_path, str(bad.video_file(2 if dataset.version == "v3.0" else 1)))
    assert "8 decoded frame(s)" in message and "12 rows" in message


def test_empty_episode(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    rewrite_parquet(bad.data_file(2), lambda table: table.filter(pa.array([False] * table.num_rows)))
    expect_failure(bad.root, tmp_path, str(bad.data_file(2)), "empty episode", "episode 2")


def test_non_monotonic_timestamps(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)

    def swap(table: pa.Table) -> pa.Table:
        timestamps = table.column("timestamp").to_numpy().copy()
        timestamps[[3, 4]] = timestamps[[4, 3]]
        return table.set_column(table.column_names.index("timestamp"), "timestamp", pa.array(timestamps))

    rewrite_parquet(bad.data_file(0), swap)
    expect_failure(bad.root, tmp_path, str(bad.data_file(0)), "not increasing", "row 4")


def test_errors_come_as_conversion_errors_from_the_api(dataset: Written, tmp_path: Path):
    bad = copy_of(dataset, tmp_path)
    bad.video_file(0).write_bytes(b"not an mp4 at all")
    with pytest.raises(ConversionError, match="cannot decode"):
        list(LeRobotSource(bad.root, ConvertOptions()).episodes())
