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

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
# torch and torchvision are pinned exactly in pyproject.toml (served from the local wheel cache).
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
touch .venv/.installed
echo "environment ready: .venv"
