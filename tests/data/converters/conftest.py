"""Running the converter CLI and checking that a failure leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/convert_teleop.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def assert_fails_cleanly(result: subprocess.CompletedProcess, out_dir: Path, *fragments: str) -> None:
    """Non-zero exit, one 'error:' line naming what is wrong, no output or temporary file."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
    assert list(out_dir.iterdir()) == [], list(out_dir.iterdir())
