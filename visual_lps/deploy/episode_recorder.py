"""The robot side's reports to a fine-tuning server (tools/finetune_robot.py), checked and recorded: a step
report per executed action, an end report with the operator's label. Each client connection has one episode in
progress; its end stores it (`visual_lps.data.robot_episodes`), and a connection that closes mid-episode leaves
it stored as incomplete (never trained on).

    {"lps_report": "step", "observation": {...} | array, "action": (action_dim,), "intervention": bool,
     "policy_version": int (the reply's, for the chunk the action came from), "reward": float (optional)}
    {"lps_report": "end", "label": "success" | "failure" | "discard", "final_observation": {...} (optional)}

A step's observation is one step's (no stack dimension), with the policy's keys (a one-array observation bare or
under "observation", as in a request); where a human was in control
the action is the human's, and its version is stored as -1.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from visual_lps.data.robot_episodes import HUMAN, LABELS, RobotEpisode, RobotEpisodeStore, StoredEpisode
from visual_lps.deploy.policy import OBSERVATION_KEY, ObservationError, check_observation
from visual_lps.observations import ObsSpec

REPORT_KEY = "lps_report"
"""the key that makes a message a report rather than an observation to act on"""
REPORT_KINDS = ("step", "end")
MAX_EPISODE_STEPS = 100_000
"""steps one episode may hold (about 2 hours at 15 Hz): a client that never ends its episodes cannot fill the
server's memory"""
MAX_EPISODES_IN_PROGRESS = 8
"""connections that may each have an episode in progress at once (robots, not a crowd of clients)"""


class ReportError(ValueError):
    """A report the recorder cannot take; the message names the field at fault."""


def _number(message: Mapping, key: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    value = message.get(key, default)
    if value is default:
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ReportError(f"'{key}' is {type(value).__name__}: expected {' or '.join(k.__name__ for k in kinds)}")
    return value


class EpisodeRecorder:
    """Checks reports against the policy (`step_spec`, `action_dim`), keeps each client's episode in progress, and
    stores finished ones in `store`; `on_stored` hears of each stored episode (the learner's queue)."""

    def __init__(self, store: RobotEpisodeStore, step_spec: ObsSpec, action_dim: int,
                 on_stored: Callable[[StoredEpisode], None] = lambda stored: None,
                 max_episode_steps: int = MAX_EPISODE_STEPS):
        self.store, self.step_spec, self.action_dim = store, step_spec, action_dim
        self.on_stored, self.max_episode_steps = on_stored, max_episode_steps
        self.episodes: dict[int, RobotEpisode] = {}
        self._store_lock = threading.Lock()

    def report(self, client: int, message: Mapping) -> dict[str, Any]:
        """The reply to one report of `client` (a connection); ReportError for a report that cannot be taken (the
        episode in progress is left as it was)."""
        kind = message.get(REPORT_KEY)
        if kind == "step":
            return self._step(client, message)
        if kind == "end":
            return self._end(client, message)
        raise ReportError(f"'{REPORT_KEY}' is {kind!r}: expected one of {list(REPORT_KINDS)}")

    def _observation(self, value: Any, key: str) -> Any:
        if not isinstance(self.step_spec, Mapping) and isinstance(value, Mapping) and OBSERVATION_KEY in value:
            value = value[OBSERVATION_KEY]  # as a request carries a one-array observation
        try:
            return check_observation(value, self.step_spec)
        except ObservationError as e:
            raise ReportError(f"'{key}': {e}") from None

    def _step(self, client: int, message: Mapping) -> dict[str, Any]:
        observation = self._observation(message.get("observation"), "observation")
        try:
            action = np.asarray(message.get("action"), np.float32)
        except (TypeError, ValueError, OverflowError) as e:
            raise ReportError(f"'action' is not an array of numbers ({e})") from None
        if action.shape != (self.action_dim,):
            raise ReportError(f"'action' has shape {action.shape}; the policy's actions are ({self.action_dim},)")
        if not np.isfinite(action).all():
            raise ReportError("'action' contains NaN or inf")
        intervention = _number(message, "intervention", (bool,), False)
        version = _number(message, "policy_version", (int,), HUMAN)
        reward = _number(message, "reward", (int, float))
        if reward is not None and not math.isfinite(reward):
            raise ReportError("'reward' is NaN or inf")
        if reward is None and self.store.reward_scheme == "source":
            raise ReportError("'reward' missing: this server labels episodes with the robot's own rewards "
                              "(--rewards source), so every step must carry one")
        if client not in self.episodes and len(self.episodes) >= MAX_EPISODES_IN_PROGRESS:
            raise ReportError(f"{len(self.episodes)} episodes are in progress already, the most this server keeps "
                              f"at once: end one first")
        episode = self.episodes.setdefault(client, RobotEpisode())
        if len(episode) >= self.max_episode_steps:
            raise ReportError(f"the episode already has {len(episode):,} steps, the most one may hold: end it")
        episode.observations.append(observation)
        episode.actions.append(action)
        episode.interventions.append(bool(intervention))
        episode.versions.append(HUMAN if intervention else int(version))
        episode.robot_rewards.append(None if reward is None else float(reward))
        return {"episode_steps": len(episode)}

    def _end(self, client: int, message: Mapping) -> dict[str, Any]:
        label = message.get("label")
        if label not in LABELS:
            raise ReportError(f"'label' is {label!r}: expected one of {list(LABELS)}")
        final = message.get("final_observation")
        final = None if final is None else self._observation(final, "final_observation")
        episode = self.episodes.get(client)
        if episode is None:
            raise ReportError("no step was reported in this episode: nothing to end")
        episode.label, episode.final_observation = label, final
        stored = self._store(client)
        return {"episode": stored.index, "label": stored.label, "steps": stored.steps, "trained_on": stored.trained_on}

    def disconnected(self, client: int) -> StoredEpisode | None:
        """The client left: its episode in progress (if any) is stored as incomplete."""
        return self._store(client) if client in self.episodes else None

    def _store(self, client: int) -> StoredEpisode:
        episode = self.episodes[client]
        try:
            with self._store_lock:
                stored = self.store.write(episode)
        except (OSError, ValueError) as e:  # a full disk: the episode stays in progress, the client hears why
            raise ReportError(f"the episode could not be stored ({e}); it is kept in progress") from None
        del self.episodes[client]
        self.on_stored(stored)
        return stored
