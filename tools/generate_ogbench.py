"""Generate an OGBench 'play' dataset locally (no internet needed), in the schema ogbench loads.

The installed command `vlps-generate` runs the same; the code, its flags and docs are in visual_lps/cli/generate_ogbench.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.generate_ogbench import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
