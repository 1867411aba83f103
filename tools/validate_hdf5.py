"""Check an HDF5 dataset against the visual-lps format (docs/hdf5_format.md) and print a summary.

The installed command `vlps-validate` runs the same; the code, its flags and docs are in visual_lps/cli/validate_hdf5.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.validate_hdf5 import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
