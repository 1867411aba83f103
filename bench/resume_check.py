"""Bit-exact resume of real train.py runs on the device at hand (a GPU check; the CPU one is in the test suite).

One run trains 2N steps straight, checkpointing at N; a copy of it, as a run stopped right after step N would
have left it, is resumed to 2N. Every tensor of the two final checkpoints' weights must be equal, bit for bit.

    python bench/resume_check.py --steps 20 -- --task cube-single --dataset-dir data/bench-speed [train.py flags]

Prints one line per run and a verdict; exit 0 when bit-exact, 1 when not (naming the first tensors that differ).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, *args: str) -> None:
    command = [sys.executable, str(ROOT / "train.py"), "--out", str(out), "--no-progress", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    said = [line for line in result.stdout.splitlines() + result.stderr.splitlines()
            if line.startswith(("update", "resumed", "warning", "error", "the update compiled"))]
    print(f"{out.name}: exit {result.returncode}; " + "; ".join(said), flush=True)
    if result.returncode != 0:
        raise SystemExit(f"train.py failed:\n{result.stderr[-3000:]}")


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="N: the checkpoint the copy resumes from (default 20)")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    from safetensors.torch import load_file

    n = args.steps
    with tempfile.TemporaryDirectory() as folder:
        straight, split = Path(folder) / "straight", Path(folder) / "split"
        train(straight, *extra, "--steps", str(2 * n), "--save-every", str(n), "--log-every", str(n),
              "--eval-episodes", "0")
        shutil.copytree(straight, split, ignore=shutil.ignore_patterns("*.lock"))
        shutil.rmtree(split / "checkpoints" / f"step_{2 * n:08d}")
        train(split, "--resume", "--steps", str(2 * n))
        final = f"checkpoints/step_{2 * n:08d}/model.safetensors"
        a, b = load_file(straight / final), load_file(split / final)
    different = [key for key in a if key not in b or not a[key].equal(b[key])]
    if different or a.keys() != b.keys():
        print(f"resume is NOT bit-exact: {len(different)} of {len(a)} tensors differ, e.g. {different[:3]}")
        return 1
    print(f"resume is bit-exact: all {len(a)} tensors equal after {2 * n} steps (resumed at {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
