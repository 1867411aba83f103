"""A served policy whose weights a learner replaces while it serves (tools/finetune_robot.py): two copies of the
agent, one serving while the other takes the new weights, then they swap. A request never waits for a load: it
takes the current copy, or the other one when a load holds the current (it is then the newer), and every chunk
comes with the version of the weights that produced it."""

from __future__ import annotations

import copy
import threading

import numpy as np
import torch

from visual_lps.deploy.policy import Policy
from visual_lps.observations import Nested


class SwappablePolicy:
    def __init__(self, policy: Policy, version: int = 0):
        self.slots = [policy, Policy(copy.deepcopy(policy.agent), policy.device)]
        self.locks = [threading.Lock(), threading.Lock()]
        self.versions = [version, version]
        self.current = 0
        self.horizon, self.action_dim, self.obs_spec = policy.horizon, policy.action_dim, policy.obs_spec

    @property
    def version(self) -> int:
        """the version of the weights that serve now"""
        return self.versions[self.current]

    def __call__(self, observation: Nested[np.ndarray]) -> tuple[np.ndarray, int]:
        """(chunk, version of the weights that chose it); errors as `Policy.__call__`."""
        first = self.current
        for slot in (first, 1 - first):
            if self.locks[slot].acquire(blocking=False):
                try:
                    return self.slots[slot](observation), self.versions[slot]
                finally:
                    self.locks[slot].release()
        with self.locks[first]:  # both busy: two requests at once (a server serves one at a time)
            return self.slots[first](observation), self.versions[first]

    def load(self, weights: dict[str, torch.Tensor], version: int) -> None:
        """Copy `weights` into the copy that is not serving, then make it the one that serves."""
        standby = 1 - self.current
        with self.locks[standby], torch.no_grad():
            self.slots[standby].agent.load_state_dict(weights)
            self.versions[standby] = version
        self.current = standby
