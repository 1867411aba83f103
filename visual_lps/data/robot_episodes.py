"""The robot's episodes while it fine-tunes (tools/finetune_robot.py), kept as they arrive: one HDF5 file per
episode in the project's robot format, written atomically when the episode ends (or when its robot disconnects),
and one index file that lists them all as a dataset, rewritten atomically after each:

    <run>/robot/episode_NNNNNN.hdf5    data/demo_0 of one episode (visual_lps.data.episode_files), plus
                                       interventions (N,) bool    a human was in control at the step
                                       policy_versions (N,) int64 the served weights' version that chose the
                                                                  action (-1 where the human did)
                                       robot_rewards (N,) float32 the robot's own rewards, when it sent them
                                       attrs: label, complete
    <run>/robot_episodes.hdf5          data/demo_N -> the episode files (HDF5 external links, relative: copy the
                                       run folder whole), mask/train (the episodes trained on: labelled success
                                       or failure), mask/valid (empty), mask/online (all), mask/discarded,
                                       mask/incomplete

A finished episode has one row per step and a last row with the final observation (zero action; the
convention of the online phase's episodes). Its rewards and terminals come from the operator's label by one of
the converter's reward schemes (`label_rewards`), so robot episodes and offline robot data share one reward
function. An episode whose robot disconnected holds the steps that arrived, is labelled 'incomplete' and is never
trained on; a discarded one is stored whole and never trained on either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from visual_lps.data.chunks import OfflineData
from visual_lps.data.episode_files import episode_files, episode_path, write_episode
from visual_lps.data.robot_hdf5 import FORMAT_VERSION, REWARD_SCHEMES, Episode, label_rewards
from visual_lps.files import atomic_write
from visual_lps.observations import Nested

LABELS = ("success", "failure", "discard")
"""what an operator says of a finished episode"""
INCOMPLETE = "incomplete"
"""the label of an episode whose robot disconnected before its end"""
TRAINED_ON = ("success", "failure")
FOLDER = "robot"
INDEX = "robot_episodes.hdf5"
HUMAN = -1
"""the policy version stored for a step a human chose"""


@dataclass
class RobotEpisode:
    """One episode as its robot reported it, step by step."""

    observations: list[Nested[np.ndarray]] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    """what the robot executed: the policy's action, or the human's where one was in control"""
    interventions: list[bool] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    robot_rewards: list[float | None] = field(default_factory=list)
    label: str = INCOMPLETE
    final_observation: Nested[np.ndarray] | None = None
    """the observation after the last action (the last step's stands in when the robot sent none)"""

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class StoredEpisode:
    index: int
    path: Path
    label: str
    steps: int
    interventions: float = 0.0
    """the fraction of its steps a human was in control"""

    @property
    def trained_on(self) -> bool:
        return self.label in TRAINED_ON


def _stack(rows: list[Nested[np.ndarray]]) -> Nested[np.ndarray]:
    if isinstance(rows[0], dict):
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    return np.stack(rows)


def episode_rows(episode: RobotEpisode, scheme: str, failure_penalty: float) -> tuple[OfflineData, dict, bool]:
    """(rows, per-step extras, has_final_row) of an episode as stored: labelled by `scheme` when it is complete
    (the final observation row appended), zero rewards and no terminal when it is not."""
    n = len(episode)
    actions = np.stack(episode.actions).astype(np.float32)
    reported = [r for r in episode.robot_rewards if r is not None]
    robot_rewards = np.array(reported, np.float32) if len(reported) == n else None
    complete = episode.label != INCOMPLETE
    if complete:
        source = Episode({}, {}, actions, episode.label == "success", "robot episode", robot_rewards)
        rewards, terminals = label_rewards(source, scheme, failure_penalty)
        final = episode.final_observation if episode.final_observation is not None else episode.observations[-1]
        observations = _stack([*episode.observations, final])
        actions = np.concatenate([actions, np.zeros_like(actions[:1])])
        rewards, terminals = np.append(rewards, 0.0).astype(np.float32), np.append(terminals, False)
        extra = 1
    else:
        observations = _stack(episode.observations)
        rewards, terminals, extra = np.zeros(n, np.float32), np.zeros(n, bool), 0
    step_data = {"interventions": np.array([*episode.interventions, *[False] * extra], bool),
                 "policy_versions": np.array([*episode.versions, *[HUMAN] * extra], np.int64)}
    if robot_rewards is not None:
        step_data["robot_rewards"] = np.append(robot_rewards, [0.0] * extra).astype(np.float32)
    ends = np.zeros(n + extra, bool)
    ends[-1] = True
    rows = OfflineData(observations, actions, rewards, 1.0 - terminals.astype(np.float32), ends)
    return rows, step_data, complete


class RobotEpisodeStore:
    """The episode files and the index of one fine-tuning run folder; numbering continues over restarts."""

    def __init__(self, run_dir: Path, reward_scheme: str = "sparse", failure_penalty: float = -100.0,
                 facts: dict | None = None):
        if reward_scheme not in REWARD_SCHEMES:
            raise ValueError(f"--rewards {reward_scheme!r}: choose one of {', '.join(REWARD_SCHEMES)}")
        self.folder, self.index = Path(run_dir) / FOLDER, Path(run_dir) / INDEX
        self.reward_scheme, self.failure_penalty, self.facts = reward_scheme, failure_penalty, facts or {}
        self.stored = [read_stored(path) for path in episode_files(self.folder)]
        if [s.index for s in self.stored] != list(range(len(self.stored))):
            raise ValueError(f"{self.folder}: episode files are not numbered 0..{len(self.stored) - 1}")

    def __len__(self) -> int:
        return len(self.stored)

    def write(self, episode: RobotEpisode) -> StoredEpisode:
        """Store one episode (its file, then the index), atomically each; its record."""
        if not len(episode):
            raise ValueError("an episode needs at least one step")
        index = len(self.stored)
        path = episode_path(self.folder, index)
        rows, step_data, complete = episode_rows(episode, self.reward_scheme, self.failure_penalty)
        facts = self.facts | {"source_format": "robot", "episode": index, "final_observation_row": complete,
                              "labels_by": self.reward_scheme}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_episode(path, rows, episode.label == "success", facts, step_data,
                      {"label": episode.label, "complete": complete})
        stored = StoredEpisode(index, path, episode.label, len(episode), float(np.mean(episode.interventions)))
        self.stored.append(stored)
        self.write_index()
        return stored

    def trained_on(self) -> list[StoredEpisode]:
        return [s for s in self.stored if s.trained_on]

    def write_index(self) -> None:
        """The index file listing every episode file (external links), with the masks, atomically."""
        with atomic_write(self.index) as written, h5py.File(written, "w") as file:
            data = file.create_group("data")
            for stored in self.stored:
                data[f"demo_{stored.index}"] = h5py.ExternalLink(f"{FOLDER}/{stored.path.name}", "data/demo_0")
            total = sum(s.steps + (s.label != INCOMPLETE) for s in self.stored)
            data.attrs["total"] = total
            data.attrs["format_version"] = FORMAT_VERSION
            if self.stored:
                with h5py.File(self.stored[0].path, "r") as first:
                    env_args = json.loads(first["data"].attrs["env_args"])
                data.attrs["env_args"] = json.dumps(env_args | {"env_name": "robot_episodes", "episode": None})
            groups = {"train": [s for s in self.stored if s.trained_on], "valid": [],
                      "online": self.stored, "discarded": [s for s in self.stored if s.label == "discard"],
                      INCOMPLETE: [s for s in self.stored if s.label == INCOMPLETE]}
            mask = file.create_group("mask")
            for name, members in groups.items():
                mask.create_dataset(name, data=np.array([f"demo_{s.index}" for s in members], "S"))


def read_stored(path: Path) -> StoredEpisode:
    """The record of an episode file written by `RobotEpisodeStore.write`."""
    with h5py.File(path, "r") as file:
        demo = file["data/demo_0"]
        label = demo.attrs.get("label", INCOMPLETE)
        label = label.decode() if isinstance(label, bytes) else str(label)
        steps = int(demo.attrs["num_samples"]) - (label != INCOMPLETE)
    return StoredEpisode(int(path.stem.split("_")[1]), path, label, steps)
