"""Export a trained policy to one file that runs with torch alone (no visual-lps, no timm, no kornia).

    python tools/export_policy.py runs/robot-eggplant-lps-s0 policy.pt2 [--compiled] [--device cuda] [--overwrite]

    # anywhere with torch:
    program = torch.export.load("policy.pt2").module()
    chunk = program({"front_image": frames_uint8_1xHxWx3, "joints": joints_float_1xD})   # (1, horizon, action_dim)

The file holds the encoder, the policy networks and the normalisers; observations go in as stored (uint8
camera frames, float proprioception, each with a leading batch of 1), actions come out in the robot's units.
--compiled writes an AOTInductor package instead, compiled for this kind of machine and --device (a minute
to build; a state chunk in about 0.1 ms on a CPU): load it with `torch._inductor.aoti_load_package(path)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="run folder (its newest checkpoint) or checkpoint folder")
    parser.add_argument("out", type=Path, help="output file (.pt2)")
    parser.add_argument("--compiled", action="store_true",
                        help="an AOTInductor package (machine code for this machine kind) instead of a portable program")
    parser.add_argument("--device", default="cpu", help="device the exported program runs on (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    if args.out.suffix != ".pt2":
        parser.error(f"{args.out}: the output is a torch.export archive, name it .pt2")
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists; give --overwrite to replace it")
    if not args.out.parent.is_dir():
        parser.error(f"{args.out.parent}: no such folder")

    from visual_lps.runs.checkpoints import CheckpointError, load_agent
    from visual_lps.deploy.export import export_policy

    try:
        agent, *_ = load_agent(args.checkpoint, args.device)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    export_policy(agent, args.out, compiled=args.compiled)
    load = "torch._inductor.aoti_load_package(path)" if args.compiled else "torch.export.load(path).module()"
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {load}(obs) -> "
          f"(1, {agent.config.horizon}, {agent.action_dim})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
