"""Every command a user runs answers --help (a '%' in a field docstring once broke train.py --help)."""

import runpy
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ENTRY_POINTS = sorted([REPO / "train.py", *(REPO / "tools").glob("*.py"), *(REPO / "bench").glob("*.py"),
                       *(REPO / "examples").glob("*.py")])


@pytest.mark.parametrize("script", ENTRY_POINTS, ids=lambda p: str(p.relative_to(REPO)))
def test_help_prints_usage_and_exits_0(script: Path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert "usage:" in capsys.readouterr().out
