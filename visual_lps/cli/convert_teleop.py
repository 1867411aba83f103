"""Convert teleoperation logs into a visual-lps HDF5 dataset (docs/hdf5_format.md), then validate it.

    python tools/convert_teleop.py --format droid   DROID_TASK_DIR  data/my_robot.hdf5 --resize 128x128
    python tools/convert_teleop.py --format lerobot LEROBOT_DIR     data/my_robot.hdf5 --camera observation.images.wrist=wrist
    python tools/convert_teleop.py --format rosbag  BAGS_DIR        data/my_robot.hdf5 --rate 10 \\
        --image-topic front=/camera/color/image_raw --state-topic joints=/joint_states --action-topic /cmd
    python tools/convert_teleop.py --format folder  EPISODES_DIR    data/my_robot.hdf5 --rewards step-penalty
    python tools/convert_teleop.py --format hdf5    RUN/online      data/online.hdf5   --rewards source  # merge files

The output is written to a temporary file beside OUT, validated, and renamed only then: a failed, invalid or
interrupted conversion leaves no file at OUT (and an OUT already there untouched). OUT may not lie inside the
source. An existing OUT is replaced only with --overwrite; missing parent folders are created. SIGTERM or SIGINT
(Ctrl-C) stops a conversion, removes its temporary file and exits with status 128 + the signal's number (143,
130); a temporary file left by a killed conversion is removed by the next conversion to the same OUT, which says
so.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

import visual_lps  # noqa: F401
from visual_lps.data.converters import FORMATS, open_source
from visual_lps.data.converters.common import ConversionError, ConvertOptions, parse_mapping
from visual_lps.data.robot_hdf5 import COMPRESSIONS, REWARD_SCHEMES, HDF5DatasetWriter
from visual_lps.stop_signals import StopSignalFlag

MAX_SIDE = 2048
"""--resize bound: a frame of 2048x2048 takes 12 MiB (48 MiB as floats while resized); a larger size is a typo,
and would fail on allocation"""


def parse_size(value: str) -> tuple[int, int]:
    height, _, width = value.lower().partition("x")
    try:
        size = int(height), int(width or height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH (e.g. 128x128), got {value!r}") from None
    if not all(1 <= side <= MAX_SIDE for side in size):
        raise argparse.ArgumentTypeError(f"each side must be in 1..{MAX_SIDE}, got {value!r}")
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
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--env-name", help="env_args['env_name'] (robomimic's task name); default: SRC's name")
    return parser


class ConversionInterrupted(Exception):
    """SIGTERM or SIGINT arrived: the conversion stops, its temporary file is removed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopOnSignal(StopSignalFlag):
    """SIGTERM and SIGINT set a flag that the conversion checks between episodes (`check` raises
    ConversionInterrupted)."""

    def check(self) -> None:
        if self.signum is not None:
            raise ConversionInterrupted(self.signum)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def prepare_output(out: Path, src: Path, overwrite: bool) -> None:
    """Before any source is read: OUT is a file path outside the source, replaced only when asked, written by no
    other conversion; temporary files of a killed conversion to OUT are removed (and said so)."""
    if out.suffix not in (".hdf5", ".h5"):
        raise ConversionError(f"{out}: the output must end in .hdf5 or .h5")
    resolved, source = out.resolve(), src.resolve()  # links and '..' resolved: the files they name
    if resolved == source or source in resolved.parents:
        raise ConversionError(f"{out}: the output is inside the source {src}: write it elsewhere (replacing a "
                              f"recording would lose it, and the next conversion would read the output)")
    if out.is_dir():
        raise ConversionError(f"{out} is a folder: OUT must be the path of a .hdf5 file")
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} exists: give --overwrite to replace it")
    for tmp in sorted(out.parent.glob(f".{out.name}.*.tmp")):
        pid = tmp.name[len(out.name) + 2:-len(".tmp")]
        if pid.isdigit() and process_alive(int(pid)):
            raise ConversionError(f"{out}: another conversion (process {pid}) is writing it ({tmp})")
        tmp.unlink()
        print(f"removed {tmp}, left by an interrupted conversion")


def convert(args: argparse.Namespace, stop: StopOnSignal) -> None:
    options = ConvertOptions(
        cameras=parse_mapping(args.camera, "--camera") or None,
        resize=args.resize,
        rate=args.rate,
        image_topics=parse_mapping(args.image_topic, "--image-topic"),
        state_topics=parse_mapping(args.state_topic, "--state-topic"),
        action_topic=args.action_topic,
        default_success=args.default_success,
    )
    # Made first: it checks --failure-penalty, --valid-fraction, ... before any source is read.
    writer = HDF5DatasetWriter(args.out, compression=args.compression, reward_scheme=args.rewards,
                               failure_penalty=args.failure_penalty, valid_fraction=args.valid_fraction,
                               split_seed=args.split_seed)
    if not args.src.exists():
        raise ConversionError(f"{args.src}: no such file or folder")
    prepare_output(args.out, args.src, args.overwrite)
    source = open_source(args.format, args.src, options)
    writer.env_args = {"source_format": args.format, "source": str(args.src),
                       "env_name": args.env_name or args.src.stem} | source.facts()
    start, frames = time.time(), 0
    with writer:  # validates the file before it takes OUT's name
        for episode in tqdm(source.episodes(), total=len(source), desc="converting", unit="ep"):
            stop.check()
            writer.add(episode)
            frames += len(episode.actions)
        stop.check()
    elapsed = time.time() - start
    print(f"converted {frames} frames in {elapsed:.1f}s ({frames / max(elapsed, 1e-9):.0f} frames/s)")
    print(writer.summary)
    stop.check()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with StopOnSignal() as stop:
        try:
            convert(args, stop)
        except ConversionInterrupted as e:
            print(f"interrupted by {e}: the conversion stopped and left no partial file", file=sys.stderr)
            sys.exit(128 + e.signum)
        except (ConversionError, ValueError, OSError) as e:
            sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
