"""A robot simulated by an OGBench single-task environment, driven through a fine-tuning server exactly as a robot
program drives it (`RobotClient`: chunks executed open loop, every step reported, the episode ended with a label),
so that robot fine-tuning (tools/finetune_robot.py) can be tried, tested and measured without a robot. The task's
success is the operator's label; the steps carry the task's rewards as its offline data label them (for
`--rewards source`); an optional simulated human (`CubeHuman`, OGBench's plan oracle aimed at the task's goal)
takes over after `patience` steps without success, and the steps it drives are reported as interventions.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from visual_lps.deploy.execution import ChunkExecutor, ControlClock
from visual_lps.deploy.serving import OBSERVATION_KEY, RobotClient
from visual_lps.envs.ogbench_env import OGBenchOnlineEnvironment


@dataclass
class RobotEpisodeLog:
    """What the simulated robot did and reported in one episode (to compare with what the server stored)."""

    label: str
    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    interventions: list[bool] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    chunk_seconds: list[float] = field(default_factory=list)
    """round trips of the chunk requests, as the robot measured them"""
    report_seconds: list[float] = field(default_factory=list)
    """round trips of the step reports"""
    step_seconds: list[float] = field(default_factory=list)
    """each control step's work: the action (a chunk request when one is due), the simulator, the report"""
    late_periods: int = 0
    """control periods the robot overran (with a control rate)"""
    reply: dict = field(default_factory=dict)
    """the server's answer to the episode's end"""


class CubeHuman:
    """A simulated operator for cube tasks: OGBench's cube plan oracle, aimed at the task's goal (the target
    mocap of block `block`), as a human with a gamepad would drive the arm there."""

    def __init__(self, env, block: int = 0, seed: int = 0):
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

        self.env, self.block = env, block
        self.oracle = CubePlanOracle(env=env, noise=0.0, noise_smoothing=0.0)
        self.active = False
        self.seed = seed

    def _info(self) -> dict:
        unwrapped = self.env.unwrapped
        info = dict(unwrapped.compute_ob_info())
        mocap = unwrapped._cube_target_mocap_ids[self.block]
        w, x, y, z = unwrapped._data.mocap_quat[mocap]
        info["privileged/target_task"] = "cube"
        info["privileged/target_block"] = self.block
        info["privileged/target_block_pos"] = unwrapped._data.mocap_pos[mocap].copy()
        info["privileged/target_block_yaw"] = np.array([math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))])
        return info

    def reset(self) -> None:
        self.active = False

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        info = self._info()
        if not self.active:
            np.random.seed(self.seed)  # the oracle draws from numpy's global generator
            self.oracle.reset(observation, info)
            self.active = True
        return np.clip(np.asarray(self.oracle.select_action(observation, info), np.float32), -1, 1)


class SimulatedRobot:
    """Runs episodes of `env_name` against a fine-tuning server: `run_episode(seed)`."""

    def __init__(self, client: RobotClient, env_name: str, sparse: bool = False, max_episode_steps: int | None = None,
                 report_rewards: bool = True, patience: int | None = None, rate_hz: float | None = None,
                 reports: bool = True):
        """`patience`: steps without success after which the simulated human takes over (None: never);
        `rate_hz`: the control rate to keep (None: as fast as the simulator runs); `reports` False: only act (a
        server that does not fine-tune)."""
        self.client, self.report_rewards, self.reports = client, report_rewards, reports
        self.env = OGBenchOnlineEnvironment(env_name, sparse, max_episode_steps)
        self.patience, self.rate_hz = patience, rate_hz
        self.human = CubeHuman(self.env.env) if patience is not None else None
        self.frame_stack = int(client.metadata.get("frame_stack", 1))
        self.versions: deque = deque()

    def _chunk(self, log: RobotEpisodeLog) -> Callable[[np.ndarray], np.ndarray]:
        def ask(observation: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            reply = self.client.infer({OBSERVATION_KEY: observation})
            log.chunk_seconds.append(time.perf_counter() - start)
            self.versions.extend([int(reply.get("policy_version", -1))] * len(reply["actions"]))
            return reply["actions"]

        return ask

    def run_episode(self, seed: int, label_override: str | None = None) -> RobotEpisodeLog:
        """One episode: act, report every step, end with the task's outcome as the label (or `label_override`)."""
        log = RobotEpisodeLog(label="failure")
        executor = ChunkExecutor(self._chunk(log))
        self.versions.clear()
        observation = self.env.reset(seed)
        history = deque([observation] * self.frame_stack, maxlen=self.frame_stack)
        if self.human is not None:
            self.human.reset()
            self.human.seed = seed
        clock = None if self.rate_hz is None else ControlClock(self.rate_hz)
        success, steps = False, 0
        while True:
            started = time.perf_counter()
            human = self.human is not None and steps >= self.patience
            if human:
                action, version = self.human(observation), -1
            else:
                action = np.asarray(executor(np.stack(history) if self.frame_stack > 1 else observation), np.float32)
                version = self.versions.popleft()
            transition = self.env.step(action)
            if self.reports:
                sent = time.perf_counter()
                self.client.report_step(observation, action, intervention=human, policy_version=version,
                                        reward=transition.reward if self.report_rewards else None)
                log.report_seconds.append(time.perf_counter() - sent)
            log.step_seconds.append(time.perf_counter() - started)
            for values, value in ((log.observations, observation), (log.actions, action),
                                  (log.interventions, human), (log.versions, version),
                                  (log.rewards, transition.reward)):
                values.append(value)
            observation = transition.next_observation
            history.append(observation)
            steps += 1
            success = transition.success
            if transition.done:
                break
            if clock is not None:
                clock.wait()
        log.late_periods = 0 if clock is None else clock.late
        log.label = label_override or ("success" if success else "failure")
        if self.reports:
            log.reply = self.client.end_episode(log.label, observation)
        return log

    def close(self) -> None:
        self.env.close()
