"""Evaluate a trained agent in its OGBench single-task env; optionally write a video of the episodes.

The installed command `vlps-evaluate` runs the same; the code, its flags and docs are in visual_lps/cli/evaluate.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.evaluate import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
