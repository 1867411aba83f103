"""Check an HDF5 dataset against the visual-lps format (docs/hdf5_format.md) and print a summary.

    python tools/validate_hdf5.py data/my_robot.hdf5

Every chunk of every demo is read back (a block at a time, with a progress bar on large files), so a file called
valid here does not fail later on a damaged chunk; a damaged one is named by demo and key.
"""

from __future__ import annotations

import argparse
import sys

from visual_lps.data.robot_hdf5 import DatasetFormatError, validate_hdf5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="the .hdf5 file")
    args = parser.parse_args(argv)
    try:
        print(validate_hdf5(args.file, read_everything=True, progress=True))
    except DatasetFormatError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
