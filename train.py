"""Train LPS (or another agent) on an OGBench task or a robot HDF5 dataset.

    python train.py --task cube-single --steps 100000
    accelerate launch train.py --task cube-single
    accelerate launch train.py --task robot --dataset data/my_robot.hdf5

The installed command `vlps-train` runs the same; the code, its flags and docs are in visual_lps/cli/train.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a checkout that is not installed

from visual_lps.cli.train import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
