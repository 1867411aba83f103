"""Compact offline data and the sampler of action chunks.

Data are held once, episode after episode, with no duplicated next observations: a chunk starting at row i
uses actions i .. i+h-1, per-step rewards and masks i .. i+h-1 and bootstraps from the observation at i+h,
all found by index arithmetic. A chunk never crosses an episode end. Frame stacks are index arithmetic
too: the k rows ending at i, clamped to the first row of i's episode (repeating it at episode starts).
Observations are one array or a dict of arrays (cameras and proprioception), indexed alike; a column may
also live on disk (`visual_lps.data.robot_data.H5Rows`), read row by row for each batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from visual_lps.observations import Nested, map_obs, num_rows


@dataclass
class OfflineData:
    """Episode-contiguous arrays; `episode_ends[i]` is True on the last row of each episode.

    In OGBench's files the last row of an episode has an observation but no usable transition (its
    successor is not recorded). Robot datasets record the last step in full (`complete_last_rows`): a chunk
    may end on it when it is terminal (mask 0), since a terminal needs no successor to bootstrap from.
    """

    observations: Nested[np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    masks: np.ndarray
    episode_ends: np.ndarray
    complete_last_rows: bool = False

    def __post_init__(self) -> None:
        n = num_rows(self.observations)
        for name in ("actions", "rewards", "masks", "episode_ends"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"'{name}' has {len(getattr(self, name))} rows but 'observations' has {n}")

    @property
    def num_episodes(self) -> int:
        return int(np.count_nonzero(self.episode_ends))


def _episode_bounds(episode_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row, last row) of each row's episode; an unterminated tail ends with the array."""
    n = len(episode_ends)
    ends = np.flatnonzero(episode_ends)
    if len(ends) == 0 or ends[-1] != n - 1:
        ends = np.append(ends, n - 1)
    episode = np.searchsorted(ends, np.arange(n))
    firsts = np.concatenate([[0], ends[:-1] + 1])
    return firsts[episode], ends[episode]


def chunk_starts(episode_ends: np.ndarray, horizon: int, terminal_last_rows: np.ndarray | None = None) -> np.ndarray:
    """Rows i whose chunk i .. i+h-1 and bootstrap observation i+h lie in i's episode; where
    `terminal_last_rows` marks an episode's last row as a terminal transition, chunks may end on it."""
    _, last_row = _episode_bounds(episode_ends)
    rows = np.arange(len(episode_ends))
    valid = rows + horizon <= last_row
    if terminal_last_rows is not None:
        valid |= (rows + horizon - 1 <= last_row) & terminal_last_rows[last_row]
    return np.flatnonzero(valid)


RandomInputs = Callable[[int, torch.device, torch.Generator], dict]
"""(batch size, device, generator) -> the random inputs of one update (an agent's `draw_random_inputs`)"""


class ChunkSampler:
    """Draws batches of chunks uniformly over valid starts, on `device`, from its own seeded generator, and
    with `draw_random` the agent's random inputs of the update from the same generator (`batch["random"]`):
    one batch is everything one update consumes, found without a host-device sync for in-memory data.

    Its state (the generator of every process) is part of a checkpoint, so a resumed run draws the batches
    it would have drawn.
    """

    def __init__(
        self,
        data: OfflineData,
        horizon: int,
        device: torch.device | str,
        seed: int,
        frame_stack: int = 1,
        draw_random: RandomInputs | None = None,
    ):
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be at least 1, got {frame_stack}")
        self.horizon = horizon
        self.frame_stack = frame_stack
        self.device = torch.device(device)
        terminal_last_rows = (data.masks == 0) & data.episode_ends if data.complete_last_rows else None
        starts = chunk_starts(data.episode_ends, horizon, terminal_last_rows)
        if len(starts) == 0:
            raise ValueError(f"no episode is longer than the chunk horizon {horizon}: nothing to train on")
        self.starts = torch.as_tensor(starts, device=self.device)
        self.observations = map_obs(self._hold, data.observations)
        self.actions = torch.as_tensor(data.actions, dtype=torch.float32, device=self.device)
        self.rewards = torch.as_tensor(data.rewards, dtype=torch.float32, device=self.device)
        self.masks = torch.as_tensor(data.masks, dtype=torch.float32, device=self.device)
        self.offsets = torch.arange(horizon, device=self.device)
        self.stack_offsets = torch.arange(1 - frame_stack, 1, device=self.device)
        first_row, last_row = _episode_bounds(data.episode_ends)
        self.episode_first = torch.as_tensor(first_row, device=self.device)
        self.episode_last = torch.as_tensor(last_row, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.draw_random = draw_random

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        pick = torch.randint(len(self.starts), (batch_size,), device=self.device, generator=self.generator)
        idx = self.starts[pick]
        steps = idx[:, None] + self.offsets
        batch = {
            "observations": self.stacked_observations(idx),
            "actions": self.actions[steps],
            "rewards": self.rewards[steps],
            "masks": self.masks[steps],
            # A chunk that ends on a terminal last row bootstraps from nothing (mask 0): any row of the
            # episode will do, so the index is clamped to it.
            "next_observations": self.stacked_observations(torch.minimum(idx + self.horizon, self.episode_last[idx])),
        }
        if self.draw_random is not None:
            batch["random"] = self.draw_random(batch_size, self.device, self.generator)
        return batch

    def stacked_observations(self, rows: torch.Tensor) -> Nested[torch.Tensor]:
        """(B, *obs) without stacking, else (B, frame_stack, *obs) ending at `rows`, within their episodes."""
        if self.frame_stack > 1:
            rows = torch.maximum(rows[:, None] + self.stack_offsets, self.episode_first[rows][:, None])
        return map_obs(lambda column: self._take(column, rows), self.observations)

    def _hold(self, column):
        """In-memory arrays move to the device once; on-disk columns (`H5Rows`) stay where they are."""
        return torch.as_tensor(column, device=self.device) if isinstance(column, np.ndarray) else column

    def _take(self, column, rows: torch.Tensor) -> torch.Tensor:
        if isinstance(column, torch.Tensor):
            return column[rows]
        return torch.from_numpy(column[rows.cpu().numpy()]).to(self.device)

    def state_dict(self) -> dict:
        """The generator states of all processes (Accelerate writes the main process's copy only); every
        process must call this, as `save_state` does."""
        state = self.generator.get_state()
        if not (dist.is_available() and dist.is_initialized()):
            return {"generators": [state]}
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, state)
        return {"generators": states}

    def load_state_dict(self, state: dict) -> None:
        states = state["generators"]
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if len(states) != world:
            warnings.warn(f"checkpoint written by {len(states)} processes, resumed on {world}: batches are drawn "
                          f"from fresh per-process seeds and differ from an uninterrupted run", stacklevel=2)
            return
        self.generator.set_state(states[rank])
