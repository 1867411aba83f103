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

from visual_lps.config import PLACEMENTS
from visual_lps.distributed import is_distributed, process_count, process_rank
from visual_lps.observations import Nested, map_obs, num_rows


@dataclass(frozen=True)
class DataNeeds:
    """What an agent reads from the data, declared by the agent's config (as LeRobot's policies do): the sampler
    cuts chunks and stacks frames by it, and the evaluator keeps the same frame history."""

    horizon: int
    """actions per chunk, and the step to the next observation s_{t+h}"""
    frame_stack: int = 1
    """consecutive observations per state (the first repeated at episode starts)"""


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

DEVICE_FRACTION = 0.5
"""'auto' puts the observations on a CUDA device when they take at most this fraction of its free memory"""


def choose_placement(observation_bytes: int, device: torch.device, requested: str = "auto") -> tuple[str, str]:
    """Where the in-memory observations live, and why (printed at the start of training).

    The rule: on a CUDA device when they take at most half of its free memory, so that batches are gathered
    by the device itself; otherwise in host memory, from which each batch is gathered on the host into
    page-locked buffers and copied asynchronously on a side stream while the previous update runs. On a CPU
    the device is host memory."""
    size = f"{observation_bytes / 2**30:.2f} GiB of observations"
    if requested not in PLACEMENTS:
        raise ValueError(f"--data-on {requested!r}: choose one of {', '.join(PLACEMENTS)}")
    if requested != "auto":
        return requested, f"{size} on the {requested} (--data-on {requested})"
    if device.type != "cuda":
        return "device", f"{size} in memory ({device.type}: the device is host memory)"
    free, _ = torch.cuda.mem_get_info(device)
    if observation_bytes <= DEVICE_FRACTION * free:
        return "device", f"{size} on {device} (at most {DEVICE_FRACTION:.0%} of its {free / 2**30:.1f} GiB free)"
    return "host", (f"{size} in host memory (more than {DEVICE_FRACTION:.0%} of the "
                    f"{free / 2**30:.1f} GiB free on {device}): batches gathered on the host, copied ahead")


class ChunkSampler:
    """Draws batches of chunks uniformly over valid starts from its own seeded generator, and with
    `draw_random` the agent's random inputs of the update from the same generator (`batch["random"]`): one
    batch is everything one update consumes, and it reaches `device` without a host-device sync.

    Observations are held where `choose_placement` says. On the device, batches are gathered there (the
    generator lives there too). On the host (or on disk: `H5Rows`), indices and random inputs are drawn on
    the host, rows gathered into page-locked buffers and copied asynchronously.

    Its state (the generator of every process) is part of a checkpoint, so a resumed run draws the batches
    it would have drawn.
    """

    def __init__(
        self,
        data: OfflineData,
        needs: DataNeeds,
        device: torch.device | str,
        seed: int,
        draw_random: RandomInputs | None = None,
        placement: str = "auto",
    ):
        horizon, frame_stack = needs.horizon, needs.frame_stack
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be at least 1, got {frame_stack}")
        self.horizon = horizon
        self.frame_stack = frame_stack
        self.device = torch.device(device)
        terminal_last_rows = (data.masks == 0) & data.episode_ends if data.complete_last_rows else None
        starts = chunk_starts(data.episode_ends, horizon, terminal_last_rows)
        if len(starts) == 0:
            raise ValueError(f"no episode is longer than the chunk horizon {horizon}: nothing to train on")
        columns = data.observations.values() if isinstance(data.observations, dict) else [data.observations]
        in_memory = sum(column.nbytes for column in columns if isinstance(column, np.ndarray))
        self.placement, self.placement_reason = choose_placement(in_memory, self.device, placement)
        on_disk = any(not isinstance(column, np.ndarray) for column in columns)
        # Where indices (and random inputs) are drawn: beside the observations they index.
        self.index_device = torch.device("cpu") if self.placement == "host" or on_disk else self.device
        self.pin = self.index_device != self.device and self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.pin else None
        self.starts = torch.as_tensor(starts, device=self.index_device)
        self.observations = map_obs(self._hold, data.observations)
        self.actions = torch.as_tensor(data.actions, dtype=torch.float32, device=self.device)
        self.rewards = torch.as_tensor(data.rewards, dtype=torch.float32, device=self.device)
        self.masks = torch.as_tensor(data.masks, dtype=torch.float32, device=self.device)
        self.offsets = torch.arange(horizon, device=self.device)
        self.stack_offsets = torch.arange(1 - frame_stack, 1, device=self.index_device)
        first_row, last_row = _episode_bounds(data.episode_ends)
        self.episode_first = torch.as_tensor(first_row, device=self.index_device)
        self.episode_last = torch.as_tensor(last_row, device=self.index_device)
        self.generator = torch.Generator(device=self.index_device)
        self.generator.manual_seed(seed)
        self.draw_random = draw_random

    def __len__(self) -> int:
        return len(self.starts)

    def draw_starts(self, batch_size: int) -> torch.Tensor:
        """The first rows of a batch's chunks, uniformly over the valid starts."""
        pick = torch.randint(len(self.starts), (batch_size,), device=self.index_device, generator=self.generator)
        return self.starts[pick]

    def sample(self, batch_size: int) -> dict:
        idx = self.draw_starts(batch_size)
        # A chunk that ends on a terminal last row bootstraps from nothing (mask 0): any row of the episode
        # will do, so the index is clamped to it.
        next_idx = torch.minimum(idx + self.horizon, self.episode_last[idx])
        batch = {"observations": self.stacked_observations(idx),
                 "next_observations": self.stacked_observations(next_idx)}
        if self.draw_random is not None:
            batch["random"] = self.draw_random(batch_size, self.index_device, self.generator)
        if self.index_device != self.device:  # drawn on the host: one asynchronous copy of all of it
            batch = self._to_device(batch | {"idx": idx})
            idx = batch.pop("idx")
        steps = idx[:, None] + self.offsets  # actions, rewards and masks always live on the device
        return batch | {"actions": self.actions[steps], "rewards": self.rewards[steps], "masks": self.masks[steps]}

    def stacked_observations(self, rows: torch.Tensor) -> Nested[torch.Tensor]:
        """(B, *obs) without stacking, else (B, frame_stack, *obs) ending at `rows`, within their episodes."""
        if self.frame_stack > 1:
            rows = torch.maximum(rows[:, None] + self.stack_offsets, self.episode_first[rows][:, None])
        return map_obs(lambda column: self._take(column, rows), self.observations)

    def _hold(self, column):
        """In-memory arrays go where the placement says; on-disk columns (`H5Rows`) stay where they are."""
        if not isinstance(column, np.ndarray):
            return column
        if self.placement == "device":
            return torch.as_tensor(column, device=self.device)
        return torch.from_numpy(np.ascontiguousarray(column))

    def _take(self, column, rows: torch.Tensor) -> torch.Tensor:
        if not isinstance(column, torch.Tensor):  # on disk
            return torch.from_numpy(column[rows.numpy()])
        if self.placement == "device":
            return column[rows]
        # Host memory: gathered straight into a page-locked buffer when it is bound for a CUDA device.
        out = torch.empty((rows.numel(), *column.shape[1:]), dtype=column.dtype, pin_memory=self.pin)
        torch.index_select(column, 0, rows.reshape(-1), out=out)
        return out.view(*rows.shape, *column.shape[1:])

    def _to_device(self, tree):
        """Host tensors -> the device, through page-locked buffers on a side stream, so that the copy of this
        batch overlaps the update still running on the device; the update's stream waits for it."""
        if self.copy_stream is None:
            return _map_tree(lambda tensor: tensor.to(self.device), tree)
        with torch.cuda.stream(self.copy_stream):
            moved = _map_tree(lambda tensor: (tensor if tensor.is_pinned() else tensor.pin_memory())
                              .to(self.device, non_blocking=True), tree)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_stream(self.copy_stream)
        _map_tree(lambda tensor: tensor.record_stream(compute), moved)  # memory stays reserved for the update
        return moved

    def state_dict(self) -> dict:
        """The generator states of all processes (Accelerate writes the main process's copy only); every
        process must call this, as `save_state` does."""
        state = self.generator.get_state()
        if not is_distributed():
            return {"generators": [state]}
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, state)
        return {"generators": states}

    def load_state_dict(self, state: dict) -> None:
        states = state["generators"]
        rank, world = process_rank(), process_count()
        if len(states) != world:
            warnings.warn(f"checkpoint written by {len(states)} processes, resumed on {world}: batches are drawn "
                          f"from fresh per-process seeds and differ from an uninterrupted run", stacklevel=2)
            return
        self.generator.set_state(states[rank])


def _map_tree(fn: Callable[[torch.Tensor], torch.Tensor], tree):
    """`fn` applied to every tensor of nested dicts."""
    if isinstance(tree, dict):
        return {key: _map_tree(fn, value) for key, value in tree.items()}
    return fn(tree)
