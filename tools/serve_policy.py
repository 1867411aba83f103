"""Serve a trained policy to robot processes over websockets, on the openpi-client protocol.

The installed command `vlps-serve` runs the same; the code, its flags and docs are in visual_lps/cli/serve_policy.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.serve_policy import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
