"""Fine-tune a trained policy on the robot: serve it, take the robot's episodes back, train on them.

The installed command `vlps-finetune-robot` runs the same; the code, its flags and docs are in visual_lps/cli/finetune_robot.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not installed

from visual_lps.cli.finetune_robot import main  # noqa: E402

if __name__ == "__main__" and (status := main()):
    sys.exit(status)
