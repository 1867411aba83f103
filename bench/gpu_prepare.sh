#!/usr/bin/env bash
# Prepare, where pip reaches PyPI, what bench/gpu_check.sh needs on a GPU machine that reaches nothing, in .gpu/
# (git-ignored; carry it with the call):
#   .gpu/wheels  Python 3.12 manylinux wheels of what a CUDA image with torch, accelerate, timm, h5py, msgpack and
#                tensorboard lacks: ogbench and its simulator, kornia, websockets, ml_collections (for the JAX
#                reference). dm_control is repacked without its suites' and locomotion's assets (about 100 MB that
#                OGBench never reads), so everything stays well under a 64 MiB carry.
#   .gpu/ref     the public JAX reference (github jellyho/LPS) and ../shared/bench's timing script, if LPS_REPO
#                (a checkout or git directory of it) is given.
#
#   bash bench/gpu_prepare.sh [LPS_REPO]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=.gpu/wheels
rm -rf .gpu/wheels.tmp && mkdir -p .gpu/wheels.tmp
packages=(ogbench==1.2.2 mujoco==4.0.1 mujoco-core==4.0.1 mujoco-studio==4.0.1 mujoco-studio-wasm==4.0.1
          dm_control==1.0.52 dm-env dm-tree labmaze glfw pyopengl gymnasium==1.4.0 farama-notifications
          kornia==0.9.0 kornia-rs==0.2.0 websockets etils ml-collections)
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .gpu/wheels.tmp "${packages[@]}" 2> >(grep -v "^WARNING: Location" >&2)
"$python" - .gpu/wheels.tmp <<'EOF'
"""Repack dm_control without the asset folders OGBench never reads."""
import sys, zipfile
from pathlib import Path

folder = Path(sys.argv[1])
for wheel in folder.glob("dm_control-*.whl"):
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not item.filename.startswith(("dm_control/suite/", "dm_control/locomotion/", "dm_control/blender/")):
                dst.writestr(item, src.read(item))
    slim.replace(wheel)
EOF
rm -rf "$wheels" && mv .gpu/wheels.tmp "$wheels"
echo "wheels: $(du -sh "$wheels" | cut -f1) in $wheels"

if [ $# -ge 1 ]; then
  rm -rf .gpu/ref && mkdir -p .gpu/ref/lps
  if [ -d "$1/.git" ] || [ -f "$1/HEAD" ]; then
    git --git-dir="$(cd "$1" && git rev-parse --absolute-git-dir)" archive HEAD agents utils | tar -x -C .gpu/ref/lps
  else
    cp -r "$1/agents" "$1/utils" .gpu/ref/lps/
  fi
  sed -i -E 's/a_min=/min=/g; s/a_max=/max=/g' .gpu/ref/lps/agents/*.py  # newer jax renamed jnp.clip's keywords
  cp ../shared/bench/jax_reference_speed.py .gpu/ref/
  echo "JAX reference: .gpu/ref"
fi
echo "carry '.gpu' with the call: bash bench/gpu_check.sh"
