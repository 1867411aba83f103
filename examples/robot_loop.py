"""A robot control loop at a fixed rate around a visual-lps policy, with a fake robot so that it runs anywhere.

    python examples/robot_loop.py --checkpoint RUN [--server ws://127.0.0.1:8000] [--rate 15] [--steps 150]
        [--execution open-loop|replan|ensemble]

Each control period: read an observation from the robot, get the action to execute now from the chunk
executor (which asks the policy for a chunk when it needs one: the local `Policy`, or a policy server started
with tools/serve_policy.py), send that action to the robot, and sleep to the next period. It reports how often
the loop missed its period.

To drive a real robot, replace `FakeRobot` with a class that has the same two methods:
- `observe() -> dict`: camera frames as uint8 (H, W, 3) under `<camera>_image`, proprioception arrays under
  the keys the policy was trained on (`Policy.obs_spec` lists them);
- `apply(action)`: send one action (the dataset's units, e.g. Cartesian velocities and gripper position).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


class FakeRobot:
    """Returns observations of the policy's spec (random frames, a slowly drifting state) and records actions."""

    def __init__(self, obs_spec: dict, seed: int = 0):
        self.spec, self.rng = obs_spec, np.random.default_rng(seed)
        self.applied: list[np.ndarray] = []

    def observe(self) -> dict[str, np.ndarray]:
        return {key: (self.rng.integers(0, 256, shape, dtype=np.uint8) if key.endswith("_image")
                      else self.rng.normal(size=shape).astype(np.float32)) for key, shape in self.spec.items()}

    def apply(self, action: np.ndarray) -> None:
        self.applied.append(np.asarray(action))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="run folder to load locally (or use --server)")
    parser.add_argument("--server", help="a policy server, ws://HOST:PORT (tools/serve_policy.py)")
    parser.add_argument("--token", default=None, help="the server's --token, if it has one")
    parser.add_argument("--rate", type=float, default=15.0, help="control rate in Hz")
    parser.add_argument("--steps", type=int, default=150, help="control steps to run")
    parser.add_argument("--execution", default="open-loop", choices=("open-loop", "replan", "ensemble"))
    parser.add_argument("--replan-every", type=int, default=1, help="steps between chunks with --execution replan")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.server is None):
        parser.error("give --checkpoint (a local policy) or --server (a policy server), one of them")
    if args.rate <= 0 or args.steps < 1 or args.replan_every < 1:
        parser.error("--rate must be positive, --steps and --replan-every at least 1")

    from visual_lps.deploy.execution import ChunkExecutor

    if args.server:
        from visual_lps.deploy.serving import PolicyClient

        host, _, port = args.server.removeprefix("ws://").rpartition(":")
        client = PolicyClient(host, int(port), args.token)
        spec = {key: tuple(shape) for key, shape in client.metadata["observation_spec"].items()}

        def ask(observation):
            return client.infer(observation)["actions"]
    else:
        from visual_lps.deploy.policy import Policy

        policy = Policy.load(args.checkpoint)
        spec = policy.obs_spec if isinstance(policy.obs_spec, dict) else {"observation": policy.obs_spec}

        def ask(observation):
            return policy(observation if isinstance(policy.obs_spec, dict) else observation["observation"])

    robot = FakeRobot(spec)
    executor = ChunkExecutor(ask, args.execution, args.replan_every)
    period, late = 1.0 / args.rate, 0
    next_tick = time.perf_counter()
    for _ in range(args.steps):
        robot.apply(executor(robot.observe()))
        next_tick += period
        wait = next_tick - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            late += 1
            next_tick = time.perf_counter()  # do not try to catch up: a robot wants steady periods
    print(f"{args.steps} steps at {args.rate:g} Hz ({args.execution}): {late} periods missed; "
          f"last action {np.round(robot.applied[-1], 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
