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


def installed_commands() -> dict[str, str]:
    """The console commands pyproject.toml declares: name -> 'module:function'."""
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_cli_module_is_an_installed_command_with_one_prefix():
    declared = installed_commands()
    modules = {value.split(":")[0] for value in declared.values()}
    assert modules == {f"visual_lps.cli.{p.stem}" for p in (REPO / "visual_lps" / "cli").glob("*.py")
                       if p.stem != "__init__"}
    assert all(name.startswith("vlps-") for name in declared)


@pytest.mark.parametrize("name", sorted(installed_commands()))
def test_each_installed_command_answers_help(name: str, monkeypatch, capsys):
    """Through the installed entry point's metadata (what `pip install` wrote), run in this process."""
    from importlib.metadata import entry_points

    (point,) = [p for p in entry_points(group="console_scripts") if p.name == name]
    assert point.value == installed_commands()[name], f"{name}: reinstall the project (pip install -e .)"
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        point.load()(["--help"])
    assert exit_info.value.code in (0, None)
    assert f"usage: {name}" in capsys.readouterr().out


def test_an_installed_command_runs_as_a_program():
    import subprocess

    command = Path(sys.executable).parent / "vlps-validate"
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: vlps-validate" in result.stdout
