"""Convert teleoperation logs into a visual-lps HDF5 dataset (docs/hdf5_format.md), then validate it.

    python tools/convert_teleop.py --format droid   DROID_TASK_DIR  data/my_robot.hdf5 --resize 128x128
    python tools/convert_teleop.py --format lerobot LEROBOT_DIR     data/my_robot.hdf5 --camera observation.images.wrist=wrist
    python tools/convert_teleop.py --format rosbag  BAGS_DIR        data/my_robot.hdf5 --rate 10 \\
        --image-topic front=/camera/color/image_raw --state-topic joints=/joint_states --action-topic /cmd
    python tools/convert_teleop.py --format folder  EPISODES_DIR    data/my_robot.hdf5 --rewards step-penalty

The output is written to a temporary file beside OUT and renamed when complete: a failed or interrupted
conversion leaves no file at OUT.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

import visual_lps  # noqa: F401
from visual_lps.data.converters import FORMATS, get_converter
from visual_lps.data.converters.common import ConversionError, ConvertOptions, parse_mapping
from visual_lps.data.robot_hdf5 import COMPRESSIONS, REWARD_SCHEMES, HDF5DatasetWriter, validate_hdf5


def parse_size(value: str) -> tuple[int, int]:
    height, _, width = value.lower().partition("x")
    try:
        size = int(height), int(width or height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH (e.g. 128x128), got {value!r}") from None
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {value!r}")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS, help="source format")
    parser.add_argument("src", type=Path, help="source folder (or file, for a single rosbag)")
    parser.add_argument("out", type=Path, help="output .hdf5 file")
    parser.add_argument("--camera", action="append", metavar="SRC[=NAME]",
                        help="keep this camera, optionally renamed (repeatable; default: every camera)")
    parser.add_argument("--resize", type=parse_size, metavar="HxW", help="resize frames to HEIGHTxWIDTH")
    parser.add_argument("--rewards", default="sparse", choices=REWARD_SCHEMES,
                        help="sparse: 1 at a success; step-penalty: -1 per step, 0 at success, "
                             "--failure-penalty at a failure; source: rewards recorded by the source")
    parser.add_argument("--failure-penalty", type=float, default=-100.0, help="last reward of a failed episode")
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="fraction of episodes in mask/valid")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/valid split")
    parser.add_argument("--compression", default="gzip", choices=COMPRESSIONS, help="image compression")
    parser.add_argument("--rate", type=float, help="rosbag: target control rate in Hz")
    parser.add_argument("--image-topic", action="append", metavar="NAME=TOPIC", help="rosbag: camera topic")
    parser.add_argument("--state-topic", action="append", metavar="NAME=TOPIC", help="rosbag: state topic")
    parser.add_argument("--action-topic", metavar="TOPIC", help="rosbag: commanded action topic")
    parser.add_argument("--default-success", action=argparse.BooleanOptionalAction, default=True,
                        help="success of episodes whose source does not record it")
    return parser


def convert(args: argparse.Namespace) -> None:
    options = ConvertOptions(
        cameras=parse_mapping(args.camera, "--camera") or None,
        resize=args.resize,
        rate=args.rate,
        image_topics=parse_mapping(args.image_topic, "--image-topic"),
        state_topics=parse_mapping(args.state_topic, "--state-topic"),
        action_topic=args.action_topic,
        default_success=args.default_success,
    )
    if not args.src.exists():
        raise ConversionError(f"{args.src}: no such file or folder")
    if args.out.suffix not in (".hdf5", ".h5"):
        raise ConversionError(f"{args.out}: the output must end in .hdf5 or .h5")
    converter = get_converter(args.format)
    total = converter.count_episodes(args.src, options)
    facts = {"source_format": args.format, "source": str(args.src)} | converter.source_facts(args.src, options)
    start, frames = time.time(), 0
    with HDF5DatasetWriter(args.out, compression=args.compression, reward_scheme=args.rewards,
                           failure_penalty=args.failure_penalty, valid_fraction=args.valid_fraction,
                           split_seed=args.split_seed, env_args=facts) as writer:
        for episode in tqdm(converter.read_episodes(args.src, options), total=total, desc="converting", unit="ep"):
            writer.add(episode)
            frames += len(episode.actions)
    elapsed = time.time() - start
    print(f"converted {frames} frames in {elapsed:.1f}s ({frames / max(elapsed, 1e-9):.0f} frames/s)")
    print(validate_hdf5(args.out))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        convert(args)
    except (ConversionError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
