"""Convert teleoperation logs into a visual-lps HDF5 dataset (docs/hdf5_format.md), then validate it.

The installed command `vlps-convert` runs the same; the code, its flags and docs are in visual_lps/cli/convert_teleop.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.convert_teleop import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
