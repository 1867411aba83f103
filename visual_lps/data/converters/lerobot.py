"""LeRobot datasets on disk (codebase versions v2.0/v2.1 and v3.0) -> `Episode`s.

    python tools/convert_teleop.py --format lerobot LEROBOT_DIR out.hdf5 --camera observation.images.wrist=wrist

The two layouts (paths are the templates `data_path` / `video_path` of `meta/info.json`):

- v2.x: one parquet per episode, `data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet`, one mp4 per
  episode and camera, `videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4`, with
  `episode_chunk = episode_index // chunks_size`; the episodes are listed in `meta/episodes.jsonl`.
- v3.0: several episodes per parquet, `data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet`, and the episodes'
  videos concatenated per camera, `videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4`; the episodes
  are rows of `meta/episodes/chunk-*/file-*.parquet`, whose columns `data/chunk_index`, `data/file_index`,
  `videos/{video_key}/chunk_index`, `videos/{video_key}/file_index`, `videos/{video_key}/from_timestamp` and
  `videos/{video_key}/to_timestamp` locate them.

Frames are matched to rows like LeRobot does: row t of an episode shows the video frame nearest to
`timestamp[t]` (plus the episode's `from_timestamp` in a v3.0 concatenated file), which must lie within 0.4 frame
periods. Cameras are the features of dtype "video" (mp4, decoded with PyAV) or "image" (PNG/JPEG bytes stored in the
parquet, decoded with Pillow).

Names in the output:
- a camera keeps the last dotted component of its key (`observation.images.wrist` -> `wrist`);
  `ConvertOptions.cameras` (`--camera SRC[=NAME]`) chooses and renames cameras, SRC being either the full feature key
  (`observation.images.wrist`) or that short name (`wrist`); `--camera SRC` alone keeps the short name;
- proprioception: `observation.state` -> `state`; any other float `observation.*` feature -> its last component;
- actions: the `action` column (required); rewards: `next.reward` when present; success: any `next.success` when
  present, else `ConvertOptions.default_success`.
Two keys with the same last component keep their full key, dots replaced by underscores.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visual_lps.data.converters.common import (ConversionError, ConvertOptions, FrameBatcher, Source,
                                               check_increasing, decode_image, select_cameras)
from visual_lps.data.robot_hdf5 import Episode

V2_VERSIONS = ("v2.0", "v2.1")
V3_VERSIONS = ("v3.0",)
SUPPORTED_VERSIONS = V2_VERSIONS + V3_VERSIONS
V2_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
FLOAT_DTYPES = ("float16", "float32", "float64")
FRAME_TOLERANCE = 0.4
"""largest distance between a row's timestamp and its video frame, in frame periods"""
OPTIONAL_COLUMNS = ("next.reward", "next.success", "episode_index")
"""frame columns that may be absent (episode_index only in a v2.x one-episode file)"""


@dataclass
class _Video:
    path: Path
    from_timestamp: float = 0.0
    to_timestamp: float | None = None
    """None: every frame of the file (v2.x, one file per episode)"""


@dataclass
class _EpisodeRef:
    index: int
    length: int | None
    data_path: Path
    videos: dict[str, _Video] = field(default_factory=dict)


class LeRobotSource(Source):
    """A LeRobot dataset; opening it reads `meta/info.json` and the episode list, and chooses the cameras."""

    def __init__(self, src: Path, options: ConvertOptions) -> None:
        super().__init__(src, options)
        self.info = _read_info(self.src)
        self.version: str = self.info["codebase_version"]
        self.fps = float(self.info["fps"])
        features = self.info["features"]
        camera_keys = [k for k, v in features.items() if v.get("dtype") in ("video", "image")]
        proprio_keys = [k for k, v in features.items() if k.startswith("observation.") and k not in camera_keys
                        and v.get("dtype") in FLOAT_DTYPES]
        self.cameras = _choose_cameras(camera_keys, options, self.src / "meta" / "info.json")  # key -> output name
        self.proprio = _short_names(proprio_keys, special={"observation.state": "state"})  # key -> output name
        video_keys = [k for k in self.cameras if self._dtype(k) == "video"]
        if self.version in V2_VERSIONS:
            self.refs = _episodes_v2(self.src, self.info, video_keys)
        else:
            self.refs = _episodes_v3(self.src, self.info, video_keys)
        if not self.refs:
            raise ConversionError(f"{self.src}: the dataset lists no episodes")

    def __len__(self) -> int:
        return len(self.refs)

    def facts(self) -> dict:
        features = self.info["features"]
        facts = {
            "control_rate_hz": self.fps,
            "lerobot_version": self.version,
            "robot_type": self.info.get("robot_type"),
            "features": list(features),
            "camera_sources": dict(self.cameras),
            "proprio_sources": dict(self.proprio),
        }
        names = features.get("action", {}).get("names")
        if names is not None:
            facts["action_names"] = names
        return facts

    def episodes(self) -> Iterator[Episode]:
        cache = _TableCache()
        for ref in self.refs:
            yield self._read_episode(ref, cache)

    def _dtype(self, key: str) -> str:
        return self.info["features"][key].get("dtype", "")

    def _read_episode(self, ref: _EpisodeRef, cache: _TableCache) -> Episode:
        options = self.options
        path = ref.data_path
        where = f"{path} (episode {ref.index})"
        image_keys = [k for k in self.cameras if self._dtype(k) == "image"]
        columns = ["action", "timestamp", "episode_index", *self.proprio, *image_keys, "next.reward", "next.success"]
        table = cache.episode_rows(path, columns, ref.index, multi_episode=self.version in V3_VERSIONS)
        n = table.num_rows
        if n == 0:
            raise ConversionError(f"{where}: empty episode (no rows)")
        if ref.length is not None and ref.length != n:
            raise ConversionError(f"{where}: {n} rows but the episode metadata gives length {ref.length}")
        timestamps = _numbers(table, "timestamp", path)[:, 0]
        check_increasing(timestamps, where, unit="row")
        timestamps = timestamps.astype(np.float64)
        actions = _numbers(table, "action", path).astype(np.float32)
        proprio = {name: _numbers(table, key, path).astype(np.float32) for key, name in self.proprio.items()}
        rewards = None
        if "next.reward" in table.column_names:
            rewards = _numbers(table, "next.reward", path)
            if rewards.shape[1] != 1:
                raise ConversionError(f"{path}: 'next.reward' must hold one value per row, got {rewards.shape[1]}")
            rewards = rewards[:, 0].astype(np.float32)
        success = options.default_success
        if "next.success" in table.column_names:
            success = bool(_numbers(table, "next.success", path).any())

        images: dict[str, np.ndarray] = {}
        for key, name in self.cameras.items():
            if self._dtype(key) == "video":
                images[name] = _video_frames(ref.videos[key], timestamps, self.fps, ref.index, options.resize)
            else:
                images[name] = _parquet_images(table, key, path, self.src, options.resize)
        source = " + ".join([str(path)] + [str(v.path) for v in ref.videos.values()]) + f" (episode {ref.index})"
        images = select_cameras(images, dataclasses.replace(options, cameras=None), source)
        try:
            return Episode(images=images, proprio=proprio, actions=actions, success=success, source=source,
                           rewards=rewards)
        except ValueError as e:
            raise ConversionError(str(e)) from None


# ---------------------------------------------------------------------------------------------- metadata


def _read_info(root: Path) -> dict:
    """`meta/info.json`, checked for what the converter relies on: a supported version, features, action, fps."""
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise ConversionError(f"{info_path}: missing; {root} is not a LeRobot dataset (expected meta/info.json)")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConversionError(f"{info_path}: cannot read as JSON ({e})") from None
    if not isinstance(info, dict):
        raise ConversionError(f"{info_path}: expected a JSON object")
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise ConversionError(f"{info_path}: codebase_version {version!r} is not supported; this converter reads "
                              f"{', '.join(SUPPORTED_VERSIONS)} (convert older datasets with LeRobot's scripts)")
    features = info.get("features")
    if not isinstance(features, dict) or not all(isinstance(v, dict) for v in features.values()):
        raise ConversionError(f"{info_path}: 'features' missing or not an object of feature name -> description")
    if "action" not in features:
        raise ConversionError(f"{info_path}: no 'action' feature; available: {sorted(features)}")
    try:
        if float(info["fps"]) <= 0:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise ConversionError(f"{info_path}: 'fps' missing or not a positive number ({info.get('fps')!r})") from None
    return info


def _short_names(keys: list[str], special: dict[str, str] | None = None) -> dict[str, str]:
    """key -> its last dotted component (or `special[key]`); colliding keys keep the full key with '_' for '.'."""
    short = {k: (special or {}).get(k, k.rsplit(".", 1)[-1]) for k in keys}
    counts: dict[str, int] = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    return {k: (name if counts[name] == 1 else k.replace(".", "_")) for k, name in short.items()}


def _choose_cameras(keys: list[str], options: ConvertOptions, info_path: Path) -> dict[str, str]:
    default = _short_names(keys)
    if options.cameras is None:
        return default
    by_short: dict[str, list[str]] = {}
    for key in keys:
        by_short.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    chosen: dict[str, str] = {}
    for requested, name in options.cameras.items():
        if requested in default:
            key = requested
        elif len(by_short.get(requested, [])) == 1:
            key = by_short[requested][0]
        elif requested in by_short:
            raise ConversionError(f"{info_path}: camera {requested!r} is ambiguous ({by_short[requested]}); "
                                  f"name it by its full key")
        else:
            raise ConversionError(f"{info_path}: camera {requested!r} not found; available: "
                                  f"{', '.join(f'{k} ({default[k]})' for k in keys) or 'none'}")
        if key in chosen:
            raise ConversionError(f"{info_path}: camera {key!r} chosen twice in --camera")
        # `--camera KEY` (no '=NAME') maps KEY to itself: keep the short output name then
        chosen[key] = default[key] if name == requested else name
    if len(set(chosen.values())) != len(chosen):
        raise ConversionError(f"{info_path}: two cameras would share an output name: {chosen}")
    return chosen


def _template(info: dict, key: str, default: str, info_path: Path) -> str:
    value = info.get(key) or default
    if not isinstance(value, str):
        raise ConversionError(f"{info_path}: {key!r} must be a path template string, got {value!r}")
    return value


def _format(template: str, info_path: Path, key: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ConversionError(f"{info_path}: cannot fill the {key!r} template {template!r} ({e!r})") from None


def _episodes_v2(root: Path, info: dict, video_keys: list[str]) -> list[_EpisodeRef]:
    info_path = root / "meta" / "info.json"
    episodes_path = root / "meta" / "episodes.jsonl"
    if not episodes_path.is_file():
        raise ConversionError(f"{episodes_path}: missing (a {info['codebase_version']} dataset lists its episodes "
                              f"there)")
    rows = []
    try:
        lines = episodes_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{episodes_path}: cannot read ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((int(row["episode_index"]), None if row.get("length") is None else int(row["length"])))
        except (ValueError, KeyError, TypeError) as e:
            raise ConversionError(f"{episodes_path}:{number}: expected a JSON object with 'episode_index' and "
                                  f"'length' ({e!r})") from None
    chunks_size = _chunks_size(info, info_path)
    data_template = _template(info, "data_path", V2_DATA_PATH, info_path)
    video_template = _template(info, "video_path", V2_VIDEO_PATH, info_path) if video_keys else ""
    refs = []
    for index, length in sorted(rows):
        chunk = index // chunks_size
        data = root / _format(data_template, info_path, "data_path", episode_chunk=chunk, episode_index=index)
        videos = {key: _Video(root / _format(video_template, info_path, "video_path", episode_chunk=chunk,
                                             video_key=key, episode_index=index)) for key in video_keys}
        refs.append(_EpisodeRef(index, length, data, videos))
    return refs


def _chunks_size(info: dict, info_path: Path) -> int:
    try:
        size = int(info.get("chunks_size", 1000))
        if size < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ConversionError(f"{info_path}: 'chunks_size' must be a positive integer, got "
                              f"{info.get('chunks_size')!r}") from None
    return size


def _episodes_v3(root: Path, info: dict, video_keys: list[str]) -> list[_EpisodeRef]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    info_path = root / "meta" / "info.json"
    folder = root / "meta" / "episodes"
    files = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not files:
        raise ConversionError(f"{folder}: no chunk-*/file-*.parquet episode metadata (a v3.0 dataset lists its "
                              f"episodes there)")
    data_template = _template(info, "data_path", V3_DATA_PATH, info_path)
    video_template = _template(info, "video_path", V3_VIDEO_PATH, info_path) if video_keys else ""
    needed = ["episode_index", "data/chunk_index", "data/file_index"]
    for key in video_keys:
        needed += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    refs = []
    for path in files:
        try:
            schema = pq.read_schema(path)
            missing = [c for c in needed if c not in schema.names]
            if missing:
                raise ConversionError(f"{path}: episode metadata lacks column(s) {missing}")
            columns = needed + (["length"] if "length" in schema.names else [])
            table = pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise ConversionError(f"{path}: cannot read as parquet ({e})") from None
        rows = table.to_pylist()
        for row in rows:
            if any(row[c] is None for c in needed):
                raise ConversionError(f"{path}: episode {row['episode_index']}: null in "
                                      f"{[c for c in needed if row[c] is None]}")
            index = int(row["episode_index"])
            data = root / _format(data_template, info_path, "data_path", chunk_index=int(row["data/chunk_index"]),
                                  file_index=int(row["data/file_index"]))
            videos = {}
            for key in video_keys:
                file = _format(video_template, info_path, "video_path", video_key=key,
                               chunk_index=int(row[f"videos/{key}/chunk_index"]),
                               file_index=int(row[f"videos/{key}/file_index"]))
                videos[key] = _Video(root / file, float(row[f"videos/{key}/from_timestamp"]),
                                     float(row[f"videos/{key}/to_timestamp"]))
            length = row.get("length")
            refs.append(_EpisodeRef(index, None if length is None else int(length), data, videos))
    refs.sort(key=lambda r: r.index)
    return refs


# ---------------------------------------------------------------------------------------------- frames


class _TableCache:
    """The last parquet file read (v3.0 files hold many episodes), with its rows grouped by episode."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.table = None
        self.rows: dict[int, np.ndarray] = {}

    def episode_rows(self, path: Path, columns: list[str], episode: int, multi_episode: bool):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if path != self.path:
            self.path, self.table, self.rows = None, None, {}
            if not path.is_file():
                raise ConversionError(f"{path}: missing parquet file (episode {episode})")
            try:
                names = pq.read_schema(path).names
                if "action" not in names:
                    raise ConversionError(f"{path}: no 'action' column; columns: {names}")
                missing = [c for c in columns if c not in names and c not in OPTIONAL_COLUMNS]
                if "episode_index" not in names and multi_episode:
                    missing.append("episode_index")
                if missing:
                    raise ConversionError(f"{path}: missing column(s) {missing}; columns: {names}")
                table = pq.read_table(path, columns=[c for c in columns if c in names])
            except (pa.ArrowException, OSError) as e:
                raise ConversionError(f"{path}: cannot read as parquet ({e})") from None
            if "episode_index" in table.column_names:
                episodes = _numbers(table, "episode_index", path).astype(np.int64).reshape(-1)
                order = np.argsort(episodes, kind="stable")
                values, starts = np.unique(episodes[order], return_index=True)
                bounds = list(starts[1:]) + [len(order)]
                self.rows = {int(v): order[s:e] for v, s, e in zip(values, starts, bounds)}
            else:
                self.rows = {episode: np.arange(table.num_rows)}
            self.path, self.table = path, table
        rows = self.rows.get(episode, np.zeros(0, np.int64))
        if len(rows) == 0 and self.table.num_rows:
            raise ConversionError(f"{path}: no rows of episode {episode}; the file holds episode(s) "
                                  f"{sorted(self.rows)[:10]}")
        if len(rows) == self.table.num_rows:
            return self.table
        return self.table.take(rows)


def _numbers(table, column: str, path: Path) -> np.ndarray:
    """A numeric (or list-of-numbers) column as a (N, D) float64/int array; ConversionError if ragged or null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = table.column(column).combine_chunks()
    if array.null_count:
        raise ConversionError(f"{path}: column '{column}' has {array.null_count} null value(s)")
    n = len(array)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False) if n else np.zeros(0, np.int64)
        if n and (lengths != lengths[0]).any():
            raise ConversionError(f"{path}: column '{column}' holds lists of different lengths "
                                  f"({sorted(set(lengths.tolist()))[:5]})")
        values = pc.list_flatten(array)
        if values.null_count:
            raise ConversionError(f"{path}: column '{column}' has null entries inside its lists")
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
                or pa.types.is_boolean(values.type)):
            raise ConversionError(f"{path}: column '{column}' holds {values.type} lists, expected numbers")
        return values.to_numpy(zero_copy_only=False).reshape(n, int(lengths[0]) if n else 0)
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type)):
        raise ConversionError(f"{path}: column '{column}' is {array.type}, expected numbers or lists of numbers")
    return array.to_numpy(zero_copy_only=False).reshape(n, 1)


def _video_frames(video: _Video, timestamps: np.ndarray, fps: float, episode: int,
                  resize: tuple[int, int] | None) -> np.ndarray:
    """The frames of `video` nearest to `from_timestamp + timestamps`, as (N, H, W, 3) uint8 RGB."""
    import av

    path = video.path
    if not path.is_file():
        raise ConversionError(f"{path}: missing video file (episode {episode})")
    tolerance = FRAME_TOLERANCE / fps
    low = video.from_timestamp - tolerance
    high = None if video.to_timestamp is None else video.to_timestamp - tolerance
    frames = FrameBatcher(resize)
    times: list[float] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ConversionError(f"{path}: cannot decode the video (episode {episode}): no video stream "
                                      f"(truncated, or not a video file?)")
            stream = container.streams.video[0]
            if low > 0 and stream.time_base is not None:
                container.seek(max(int(low / stream.time_base), 0), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    raise ConversionError(f"{path}: a frame without a timestamp (episode {episode})")
                t = float(frame.time)
                if t < low:
                    continue
                if high is not None and t >= high:
                    break
                frames.add(frame.to_ndarray(format="rgb24"))
                times.append(t)
    except ConversionError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        raise ConversionError(f"{path}: cannot decode the video (episode {episode}): {e}") from None
    n = len(timestamps)
    span = "" if video.to_timestamp is None else f" in [{video.from_timestamp:.4g}s, {video.to_timestamp:.4g}s)"
    if len(times) < n:
        raise ConversionError(f"{path}: {len(times)} decoded frame(s){span} but the episode {episode} has {n} rows "
                              f"(video and data lengths differ; truncated video?)")
    decoded = np.asarray(times)
    if (np.diff(decoded) <= 0).any():
        order = np.argsort(decoded, kind="stable")
        decoded = decoded[order]
    else:
        order = None
    queries = video.from_timestamp + timestamps
    right = np.clip(np.searchsorted(decoded, queries), 1, len(decoded) - 1) if len(decoded) > 1 else np.zeros(n, int)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(decoded[left] - queries) <= np.abs(decoded[right] - queries), left, right)
    distance = np.abs(decoded[nearest] - queries)
    if (distance > tolerance).any():
        row = int(np.argmax(distance > tolerance))
        raise ConversionError(f"{path}: no frame within {tolerance:.4g}s of row {row}'s timestamp "
                              f"{queries[row]:.6g}s (episode {episode}; nearest frame at {decoded[nearest[row]]:.6g}s)")
    if order is not None:
        nearest = order[nearest]
    return frames.array()[nearest]


def _parquet_images(table, key: str, path: Path, root: Path, resize: tuple[int, int] | None) -> np.ndarray:
    """Images stored in the parquet ({'bytes': PNG/JPEG, 'path': ...} structs) as (N, H, W, 3) uint8 RGB."""
    frames = FrameBatcher(resize)
    for row, value in enumerate(table.column(key).to_pylist()):
        data = value.get("bytes") if isinstance(value, dict) else value if isinstance(value, bytes) else None
        file = value.get("path") if isinstance(value, dict) else None
        if data is None and file:
            data = Path(file) if Path(file).is_absolute() else root / file
        if data is None:
            raise ConversionError(f"{path}: column '{key}' row {row}: no image bytes or path")
        frames.add(decode_image(data, f"{path}: column '{key}' row {row}"))
    return frames.array()
