"""Run a grid of training runs (tasks x agents x seeds), each a normal run folder, one after the other.

The installed command `vlps-sweep` runs the same; the code, its flags and docs are in visual_lps/cli/sweep.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.sweep import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
