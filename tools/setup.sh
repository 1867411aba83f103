#!/usr/bin/env bash
# Create .venv at the repository root and install the project into it, with the Debian libraries that
# headless MuJoCo rendering needs (EGL, and OSMesa as the fallback). Safe to run again: it installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing rendering libraries: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || echo "warning: could not install ${missing[*]}; rendering (videos, visual tasks) may not work" >&2
  fi
fi

# The interpreter: $PYTHON if given, else the first of python3.11, python3.12, python3.13, python3 on PATH that is one
# of them (torch 2.14.1 and every dependency publish wheels for these).
supported() { "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON
else
  python=
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && supported "$candidate"; then python=$candidate; break; fi
  done
  [ -n "$python" ] || { echo "error: no Python 3.11, 3.12 or 3.13 found (set PYTHON=/path/to/python3.x)" >&2; exit 1; }
fi
supported "$python" || { echo "error: $python is not Python 3.11, 3.12 or 3.13" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then
  # labmaze, which dm_control requires for its locomotion mazes (no task here uses them; nothing imports it), has
  # no wheel for 3.13 and its source build needs bazel: dm_control and ogbench go in without their dependencies,
  # then those dependencies but labmaze, then the project's own.
  echo "Python 3.13: installing dm_control without labmaze (no 3.13 wheel; unused here)"
  "${pip[@]}" --no-deps dm_control ogbench
  "${pip[@]}" absl-py dm-env 'dm-tree!=0.1.2' glfw lxml 'mujoco>=3.1.6,!=3.9.0' protobuf pyopengl pyparsing requests \
    scipy setuptools tqdm 'gymnasium[mujoco]'
  mapfile -t requirements < <(.venv/bin/python -c 'import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(d for d in project["dependencies"] + project["optional-dependencies"]["test"]
                if not d.startswith("ogbench")))')
  "${pip[@]}" "${requirements[@]}"
  "${pip[@]}" --no-deps -e '.[test]'
else
  # torch and torchvision are pinned exactly in pyproject.toml (served from the local wheel cache).
  "${pip[@]}" -e '.[test]'
fi
touch .venv/.installed
echo "environment ready: .venv"
