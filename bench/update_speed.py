"""Training-update throughput of an agent on this machine: steps/s of forward + backward + Adam + Polyak at
the default LPS sizes, data already on device: a state task (28-D observations, 5-D actions, as cube-single)
or, with --visual, visual OGBench (3 stacked 64x64 uint8 frames, IMPALA encoder, random shift p = 0.5), with
one shared encoder or, with --per-network-encoders, one per network as in FQL and the LPS reference.

    python bench/update_speed.py [--batch-size 256] [--horizon 5] [--steps 200] [--bf16] [--visual]
                                 [--per-network-encoders] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from visual_lps.agents.lps import LPSAgent, LPSConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (as accelerate --mixed_precision bf16)")
    parser.add_argument("--visual", action="store_true", help="pixel observations through the IMPALA encoder")
    parser.add_argument("--per-network-encoders", action="store_true", help="one encoder per network (not shared)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    action_dim, b, h = 5, args.batch_size, args.horizon
    if args.visual:
        config = LPSConfig(horizon=h, encoder="impala_small", frame_stack=3, augment_prob=0.5,
                           shared_encoder=not args.per_network_encoders)
        obs_shape = (3, 64, 64, 3)
        observations = [torch.randint(0, 256, (b, *obs_shape), dtype=torch.uint8, device=device) for _ in range(2)]
    else:
        config, obs_shape = LPSConfig(horizon=h), (28,)
        observations = [torch.randn(b, *obs_shape, device=device) for _ in range(2)]
    agent = LPSAgent(config, obs_shape, action_dim).to(device)
    optimizer = torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=3e-4, fused=True)
    batch = {
        "observations": observations[0],
        "next_observations": observations[1],
        "actions": torch.rand(b, h, action_dim, device=device) * 2 - 1,
        "rewards": -torch.ones(b, h, device=device),
        "masks": torch.ones(b, h, device=device),
    }
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss, _ = agent(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        agent.update_targets()

    for _ in range(10):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    precision = "bf16 autocast" if args.bf16 else "fp32"
    kind = "visual" if args.visual else "state"
    if args.visual:
        kind += ", per-network encoders" if args.per_network_encoders else ", shared encoder"
    print(f"{kind}, {device.type} ({torch.get_num_threads()} threads), batch {b}, h {h}, {precision}: "
          f"{args.steps / elapsed:.1f} steps/s ({1000 * elapsed / args.steps:.1f} ms/step)")


if __name__ == "__main__":
    main()
