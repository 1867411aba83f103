"""The helpers every converter shares, and the `Source` contract each format follows."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.data.converters import test_droid, test_folder, test_lerobot, test_rosbag
from visual_lps.data.converters import FORMATS, common, open_source
from visual_lps.data.converters.common import (RESIZE_BATCH, ConversionError, ConvertOptions, FrameBatcher, Source,
                                               bgr_to_rgb, check_increasing, decode_image, outcome_folders,
                                               resize_frames)
from visual_lps.data.robot_hdf5 import Episode


def test_check_increasing_names_the_first_bad_step():
    check_increasing(np.array([0.0, 0.1, 0.2]), "t.npy")
    check_increasing(np.zeros(1), "t.npy")
    with pytest.raises(ConversionError, match=r"^t\.npy: timestamps are not increasing \(step 2\): 0\.1 then 0\.1$"):
        check_increasing(np.array([0.0, 0.1, 0.1, 0.05]), "t.npy")
    with pytest.raises(ConversionError, match=r"^bag: topic /j: timestamps are not increasing \(message 1\): 5 then 3 "
                                              r"ns; why$"):
        check_increasing(np.array([5, 3], np.int64), "bag: topic /j", unit="message", hint=" ns; why")


def test_bgr_to_rgb_reverses_the_colours_and_drops_alpha():
    bgra = np.array([[[[1, 2, 3, 255]]]], np.uint8)
    rgb = bgr_to_rgb(bgra)
    assert rgb.tolist() == [[[[3, 2, 1]]]] and rgb.flags.c_contiguous
    assert bgr_to_rgb(bgra[..., :3]).tolist() == [[[[3, 2, 1]]]]


@pytest.mark.parametrize("resize", [None, (3, 5)])
def test_frame_batcher_keeps_order_and_resizes_like_the_whole_episode(resize: tuple[int, int] | None):
    frames = np.random.default_rng(0).integers(0, 256, (2 * RESIZE_BATCH + 5, 6, 10, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(len(frames)) % 256
    batcher = FrameBatcher(resize)
    for frame in frames:
        batcher.add(frame)
    expected = frames if resize is None else resize_frames(frames, resize)
    np.testing.assert_array_equal(batcher.array(), expected)


def test_large_frames_are_resized_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch):
    """The float copies stay near RESIZE_FLOAT_BYTES: 64 frames enlarged to 2048x2048 would take 6 GiB at once."""
    frames = np.random.default_rng(0).integers(0, 256, (10, 6, 10, 3), dtype=np.uint8)
    whole = resize_frames(frames, (12, 8))
    calls = []
    interpolate = common.F.interpolate
    monkeypatch.setattr(common.F, "interpolate", lambda x, **kw: calls.append(len(x)) or interpolate(x, **kw))
    monkeypatch.setattr(common, "RESIZE_FLOAT_BYTES", 3 * 2 * 3 * 4 * 12 * 10)  # 3 frames of the larger size
    np.testing.assert_array_equal(resize_frames(frames, (12, 8)), whole)
    assert calls == [3, 3, 3, 1]


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def test_decode_image_from_bytes_or_file(tmp_path: Path):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode(pixels, "PNG"), "x"), pixels)
    (tmp_path / "grey.png").write_bytes(encode(pixels[..., 0], "PNG"))
    np.testing.assert_array_equal(decode_image(tmp_path / "grey.png", "x"), np.repeat(pixels[..., :1], 3, axis=2))
    np.testing.assert_array_equal(decode_image(encode(pixels, "BMP"), "x"), pixels)
    with pytest.raises(ConversionError, match=r"^row 3: unreadable image \(cannot decode it"):
        decode_image(b"not an image", "row 3")


def test_decode_image_with_formats_refuses_other_formats_and_deep_images():
    pixels = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(ConversionError, match=r"unsupported image \(BMP RGB\); supported: 8-bit JPEG and PNG"):
        decode_image(encode(pixels, "BMP"), "x", formats=("JPEG", "PNG"))
    with pytest.raises(ConversionError, match=r"unsupported image \(PNG I"):
        decode_image(encode(np.full((4, 6), 1000, np.uint16), "PNG"), "x", formats=("JPEG", "PNG"))


def test_outcome_folders_lists_successes_then_failures_in_name_order(tmp_path: Path):
    for name in ("success/b/t.h5", "success/a.h5", "failure/c.h5", "elsewhere/d.h5", "success/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    assert outcome_folders(tmp_path, "**/*.h5") == [
        (tmp_path / "success/a.h5", True), (tmp_path / "success/b/t.h5", True), (tmp_path / "failure/c.h5", False)]
    with pytest.raises(ConversionError, match=r"nothing matches success/\*\*/\*\.bag or failure/\*\*/\*\.bag"):
        outcome_folders(tmp_path, "**/*.bag")


# ------------------------------------------------------------------------------------- one Source per format


def droid_source(root: Path) -> tuple[ConvertOptions, Callable[[], None]]:
    test_droid.write_trajectory(root / "success/a/trajectory.h5", 5, seed=0)
    test_droid.write_trajectory(root / "failure/b/trajectory.h5", 4, seed=1)
    return ConvertOptions(), lambda: test_droid.write_trajectory(root / "success/c/trajectory.h5", 3)


def folder_source(root: Path) -> tuple[ConvertOptions, Callable[[], None]]:
    test_folder.write_episode(root / "ep0", 5, 0)
    test_folder.write_episode(root / "ep1", 4, 1)
    return ConvertOptions(), lambda: test_folder.write_episode(root / "ep2", 3, 2)


def lerobot_source(root: Path) -> tuple[ConvertOptions, Callable[[], None]]:
    test_lerobot.write_dataset(root, "v3.0", episodes=2, length=4, size=(16, 16), image_camera=False)

    def spoil() -> None:  # the metadata is read when the source is opened, never again
        (root / "meta/info.json").unlink()
        shutil.rmtree(root / "meta/episodes")

    return ConvertOptions(), spoil


def rosbag_source(root: Path) -> tuple[ConvertOptions, Callable[[], None]]:
    (root / "failure").mkdir()
    test_rosbag.write_episode(root / "success/a", "sqlite3", 1.0)
    test_rosbag.write_episode(root / "failure/b.bag", "ros1", 1.0)
    return test_rosbag.options(), lambda: test_rosbag.write_episode(root / "success/c", "sqlite3", 1.0)


@pytest.mark.parametrize("make", [droid_source, folder_source, lerobot_source, rosbag_source],
                         ids=lambda make: make.__name__.removesuffix("_source"))
def test_a_source_is_scanned_once_when_opened(make, tmp_path: Path):
    """Counting, describing and reading the episodes all use what opening found: a change on disk after opening
    (a new episode, or the metadata gone) is not seen."""
    name = make.__name__.removesuffix("_source")
    options, spoil = make(tmp_path)
    source = open_source(name, tmp_path, options)
    assert isinstance(source, Source) and type(source).__name__ == FORMATS[name][1]
    spoil()
    assert len(source) == 2
    assert isinstance(source.facts(), dict)
    episodes = list(source.episodes())
    assert len(episodes) == 2 and all(isinstance(e, Episode) for e in episodes)


def test_open_source_refuses_an_unknown_format(tmp_path: Path):
    with pytest.raises(ValueError, match=r"--format 'mcap': choose one of droid, lerobot, rosbag, folder, hdf5"):
        open_source("mcap", tmp_path, ConvertOptions())


def test_a_format_loads_its_libraries_only_when_used(tmp_path: Path):
    droid_source(tmp_path)
    code = ("import sys; from visual_lps.data.converters import open_source; "
            "from visual_lps.data.converters.common import ConvertOptions; "
            f"list(open_source('droid', {str(tmp_path)!r}, ConvertOptions()).episodes()); "
            "print(sorted(m for m in ('av', 'pyarrow', 'rosbags') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
