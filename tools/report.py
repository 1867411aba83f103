"""Tables and learning curves from run folders (a tools/sweep.py folder, or any folder holding runs).

The installed command `vlps-report` runs the same; the code, its flags and docs are in visual_lps/cli/report.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.report import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
