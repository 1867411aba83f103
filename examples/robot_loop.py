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

With --finetune the server is tools/finetune_robot.py and the loop runs --episodes episodes, reporting every
executed step and each episode's end (`RobotClient`), so that the learner trains on them:

    python tools/finetune_robot.py --checkpoint RUN --out RUN-ft        # the learner and its server
    python examples/robot_loop.py --server ws://127.0.0.1:8000 --finetune --episodes 3 --episode-steps 100

The operator stays abstract: two callables (`Operator`). `episode_over(step, observation)` returns None while
the episode goes on, else its label ("success", "failure" or "discard"); `human_action(observation)` returns
None while the policy is in control, else the action a human commands (an intervention: it is executed, and
stored instead of the policy's). A keyboard, a gamepad or a VR controller plugs in as these two functions;
`ScriptedOperator` here ends each episode after --episode-steps steps and takes over for --takeover-steps at
the end of every other episode.
"""

from __future__ import annotations

import argparse
import sys
from typing import Protocol

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


class Operator(Protocol):
    def episode_over(self, step: int, observation: dict) -> str | None: ...

    def human_action(self, observation: dict) -> np.ndarray | None: ...


class ScriptedOperator:
    """Ends each episode after `steps` steps (a failure, as a stand-in for the operator's verdict) and, in every
    other episode, takes the controls for its last `takeover` steps (holding the arm still: zero action)."""

    def __init__(self, steps: int, takeover: int, action_dim: int):
        self.steps, self.takeover, self.action_dim = steps, takeover, action_dim
        self.episode, self.step = 0, 0

    def episode_over(self, step: int, observation: dict) -> str | None:
        self.step = step
        if step < self.steps:
            return None
        self.episode, self.step = self.episode + 1, 0
        return "failure"

    def human_action(self, observation: dict) -> np.ndarray | None:
        if self.episode % 2 == 1 and self.step >= self.steps - self.takeover:
            return np.zeros(self.action_dim, np.float32)
        return None


def run_finetuning(args: argparse.Namespace, client, robot: FakeRobot, operator) -> int:
    """Episodes at the control rate: each step's action from the policy (or the human), executed and reported;
    each episode's end labelled by the operator."""
    from collections import deque

    from visual_lps.deploy.execution import ChunkExecutor, ControlClock

    frame_stack = int(client.metadata.get("frame_stack", 1))
    stacked = frame_stack > 1
    version = {"last": -1}

    def ask(observation):
        reply = client.infer(observation)
        version["last"] = int(reply.get("policy_version", -1))
        return reply["actions"]

    executor = ChunkExecutor(ask, args.execution, args.replan_every)
    clock, taken_over = ControlClock(args.rate), 0
    for episode in range(args.episodes):
        executor.reset()
        observation = robot.observe()
        history = deque([observation] * frame_stack, maxlen=frame_stack)
        clock.restart()
        step = 0
        while True:
            human = operator.human_action(observation)
            if human is None:
                query = {k: np.stack([h[k] for h in history]) for k in observation} if stacked else observation
                action = executor(query)
            else:
                action, taken_over = np.asarray(human, np.float32), taken_over + 1
            robot.apply(action)
            client.report_step(observation, action, intervention=human is not None,
                               policy_version=None if human is not None else version["last"])
            step += 1
            observation = robot.observe()
            history.append(observation)
            label = operator.episode_over(step, observation)
            if label is not None:
                receipt = client.end_episode(label, observation)
                print(f"episode {receipt['episode']}: {label}, {receipt['steps']} steps stored"
                      f"{'' if receipt['trained_on'] else ' (not trained on)'}; weights v{version['last']}")
                break
            clock.wait()
    print(f"{args.episodes} episodes at {args.rate:g} Hz: {clock.late} periods missed, {taken_over} steps by the "
          f"human")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="run folder to load locally (or use --server)")
    parser.add_argument("--server", help="a policy server, ws://HOST:PORT (tools/serve_policy.py)")
    parser.add_argument("--token", default=None, help="the server's --token, if it has one")
    parser.add_argument("--rate", type=float, default=15.0, help="control rate in Hz")
    parser.add_argument("--steps", type=int, default=150, help="control steps to run")
    parser.add_argument("--execution", default="open-loop", choices=("open-loop", "replan", "ensemble"))
    parser.add_argument("--replan-every", type=int, default=1, help="steps between chunks with --execution replan")
    parser.add_argument("--finetune", action="store_true", help="report steps and episode ends to a fine-tuning "
                                                                "server (tools/finetune_robot.py; needs --server)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to run with --finetune")
    parser.add_argument("--episode-steps", type=int, default=100, help="steps per episode of the scripted operator")
    parser.add_argument("--takeover-steps", type=int, default=10,
                        help="steps the scripted operator takes over at the end of every other episode")
    args = parser.parse_args(argv)
    if args.finetune and args.server is None:
        parser.error("--finetune reports to a fine-tuning server: give --server (tools/finetune_robot.py)")
    if args.episodes < 1 or args.episode_steps < 1 or args.takeover_steps < 0:
        parser.error("--episodes and --episode-steps must be at least 1, --takeover-steps at least 0")
    if (args.checkpoint is None) == (args.server is None):
        parser.error("give --checkpoint (a local policy) or --server (a policy server), one of them")
    if args.rate <= 0 or args.steps < 1 or args.replan_every < 1:
        parser.error("--rate must be positive, --steps and --replan-every at least 1")

    from visual_lps.deploy.execution import ChunkExecutor, ControlClock

    if args.server:
        from visual_lps.deploy.serving import PolicyClient, RobotClient

        host, _, port = args.server.removeprefix("ws://").rpartition(":")
        client = (RobotClient if args.finetune else PolicyClient)(host, int(port), args.token)
        spec = {key: tuple(shape) for key, shape in client.metadata["observation_spec"].items()}
        if args.finetune:
            if not client.metadata.get("fine_tuning"):
                parser.error(f"--finetune: {args.server} serves without fine-tuning (tools/serve_policy.py); start "
                             f"tools/finetune_robot.py")
            stack = int(client.metadata.get("frame_stack", 1))
            step_spec = {key: shape[1:] if stack > 1 else shape for key, shape in spec.items()}
            operator = ScriptedOperator(args.episode_steps, args.takeover_steps, int(client.metadata["action_dim"]))
            return run_finetuning(args, client, FakeRobot(step_spec), operator)

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
    clock = ControlClock(args.rate)
    for _ in range(args.steps):
        robot.apply(executor(robot.observe()))
        clock.wait()
    print(f"{args.steps} steps at {args.rate:g} Hz ({args.execution}): {clock.late} periods missed; "
          f"last action {np.round(robot.applied[-1], 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
