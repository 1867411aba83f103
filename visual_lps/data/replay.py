"""The replay buffer of offline-to-online training: the offline data and every online step in one store, sampled
as the offline data alone are (`ChunkSampler`: chunks by index arithmetic, frame stacks clamped to episodes).

Online episodes are stored as OGBench's files store theirs: one row per step (observation, action, reward, mask)
and a last row holding the final observation only, which bootstraps the chunks that end before it and starts
none. A chunk of the episode in progress becomes a valid start once its bootstrap observation is stored, so it
never reads a row that is not there yet, and no chunk crosses an episode's end.

Rows live where the sampler put the offline data (on the device, or in host memory) and grow geometrically up to
`capacity`; at capacity the oldest whole episodes (offline ones first, as a ring buffer drops its oldest rows)
make room for the next episode.
"""

from __future__ import annotations

import numpy as np
import torch

from visual_lps.data.chunks import ChunkSampler, DataNeeds, OfflineData, RandomInputs
from visual_lps.observations import Nested, map_obs, num_rows

IN_PROGRESS = torch.iinfo(torch.int64).max
"""`episode_last` of the rows of the episode in progress, whose last row is not known yet"""
GROWTH = 1.5
"""storage grows by this factor (at least) when a row does not fit, up to the capacity"""


class ReplayBuffer(ChunkSampler):
    """A `ChunkSampler` whose rows grow: `begin_episode`, `add` per step, `end_episode` with the final observation.

    Batches are drawn uniformly over every valid chunk (offline and online alike, the public LPS code's choice),
    or with `offline_ratio` that fraction of each batch from the offline rows and the rest from the online ones
    (all offline until an online chunk exists).
    """

    def __init__(
        self,
        data: OfflineData,
        needs: DataNeeds,
        device: torch.device | str,
        seed: int,
        draw_random: RandomInputs | None = None,
        placement: str = "auto",
        capacity: int = 0,
        offline_ratio: float | None = None,
    ):
        rows = num_rows(data.observations)
        if capacity and capacity < rows:
            raise ValueError(f"--buffer-capacity {capacity:,} is smaller than the offline data ({rows:,} rows)")
        if offline_ratio is not None and not 0.0 <= offline_ratio <= 1.0:
            raise ValueError(f"--offline-ratio {offline_ratio}: must be in [0, 1]")
        super().__init__(data, needs, device, seed, draw_random, placement)
        columns = data.observations.values() if isinstance(data.observations, dict) else [data.observations]
        if any(not isinstance(column, np.ndarray) for column in columns):
            raise ValueError("online training holds the offline data in memory: give --data-cache ram")
        self.capacity = capacity
        self.size = rows
        """rows stored"""
        self.offline_rows = rows
        """the first rows are the offline data (fewer once the oldest are dropped at capacity)"""
        self.offline_ratio = offline_ratio
        self.num_starts = len(self.starts)
        self.offline_starts = self.num_starts
        """valid chunks in offline rows (kept on the host: sampling never waits for the device)"""
        self.episode_start: int | None = None
        """first row of the episode in progress"""
        self._starts = self.starts
        """the valid chunk starts (the first `num_starts` rows), with room to grow; `starts` is their view"""

    # -- growing -----------------------------------------------------------------------------------------------

    @property
    def allocated(self) -> int:
        return len(self.actions)

    def _reserve(self, rows: int) -> None:
        """Room for `rows` more rows: storage grown (up to the capacity), or the oldest episodes dropped."""
        needed = self.size + rows
        if self.capacity and needed > self.capacity:
            self._drop_oldest(needed - self.capacity)
            needed = self.size + rows
        if needed <= self.allocated:
            return
        grown = max(needed, int(self.allocated * GROWTH))
        new_rows = min(grown, self.capacity) if self.capacity else grown

        def grow(tensor: torch.Tensor) -> torch.Tensor:
            return grow_to(tensor, new_rows, self.size)

        self.observations = map_obs(grow, self.observations)
        self.actions, self.rewards, self.masks = grow(self.actions), grow(self.rewards), grow(self.masks)
        self.episode_first, self.episode_last = grow(self.episode_first), grow(self.episode_last)
        if len(self._starts) < new_rows:
            self._starts = grow_to(self._starts, new_rows, self.num_starts)

    def _drop_oldest(self, rows: int) -> None:
        """Drop the oldest whole episodes holding at least `rows` rows; everything after them moves to the front."""
        if self.episode_start is not None and rows > self.episode_start:
            raise ValueError(f"--buffer-capacity {self.capacity:,}: an episode needs more rows than the buffer "
                             f"holds beside it")
        cut = int(self.episode_last[rows - 1]) + 1  # the end of the episode holding the row-th oldest row
        keep = self.size - cut

        def shift(tensor: torch.Tensor) -> None:
            tensor[:keep] = tensor[cut: self.size].clone()

        map_obs(shift, self.observations)
        for tensor in (self.actions, self.rewards, self.masks, self.episode_first, self.episode_last):
            shift(tensor)
        self.episode_first[:keep] -= cut
        in_progress = self.episode_last[:keep] == IN_PROGRESS
        self.episode_last[:keep] = torch.where(in_progress, self.episode_last[:keep], self.episode_last[:keep] - cut)
        starts = self._starts[: self.num_starts]
        kept = starts[starts >= cut] - cut
        self.num_starts = len(kept)
        self._starts[: self.num_starts] = kept
        self.size, self.offline_rows = keep, max(self.offline_rows - cut, 0)
        self.offline_starts = int((kept < self.offline_rows).sum())
        if self.episode_start is not None:
            self.episode_start -= cut
        self.starts = self._starts[: self.num_starts]

    # -- adding ------------------------------------------------------------------------------------------------

    def begin_episode(self, max_rows: int) -> None:
        """Start an episode of at most `max_rows` rows (its steps and its final observation)."""
        if self.episode_start is not None:
            raise RuntimeError("an episode is already in progress")
        self._reserve(max_rows)
        self.episode_start = self.size

    def add(self, observation: Nested[np.ndarray], action: np.ndarray, reward: float, mask: float) -> None:
        """One step of the episode in progress: the observation, the action taken at it, its reward and mask."""
        self._append(observation, action, reward, mask)

    def end_episode(self, final_observation: Nested[np.ndarray], reward: float = 0.0, mask: float = 1.0) -> None:
        """The final observation closes the episode: its chunks are complete, and none will cross its end."""
        if self.episode_start is None:
            raise RuntimeError("no episode in progress")
        action = np.zeros(self.actions.shape[1:], np.float32)
        last = self._append(final_observation, action, reward, mask)
        self.episode_last[self.episode_start: last + 1] = last
        self.episode_start = None

    def abandon_episode(self) -> None:
        """Forget an episode begun but given no step."""
        if self.episode_start is not None and self.size != self.episode_start:
            raise RuntimeError("the episode in progress has steps: end it instead")
        self.episode_start = None

    def add_episode(self, episode: OfflineData) -> None:
        """A whole stored episode (rows as `add` and `end_episode` wrote them), e.g. read back on resume."""
        n = len(episode.actions)
        self.begin_episode(n)
        for t in range(n - 1):
            self.add(map_obs(lambda column, t=t: column[t], episode.observations), episode.actions[t],
                     float(episode.rewards[t]), float(episode.masks[t]))
        self.end_episode(map_obs(lambda column: column[n - 1], episode.observations),
                         float(episode.rewards[n - 1]), float(episode.masks[n - 1]))

    def _append(self, observation: Nested[np.ndarray], action: np.ndarray, reward: float, mask: float) -> int:
        if self.episode_start is None:
            raise RuntimeError("begin_episode first")
        if self.size >= self.allocated:
            self._reserve(1)
        row = self.size

        def put(column: torch.Tensor, value: np.ndarray) -> None:
            column[row] = torch.as_tensor(np.asarray(value), dtype=column.dtype)

        if isinstance(self.observations, dict):
            for key, column in self.observations.items():
                put(column, observation[key])
        else:
            put(self.observations, observation)
        put(self.actions, action)
        self.rewards[row] = reward
        self.masks[row] = mask
        self.episode_first[row] = self.episode_start
        self.episode_last[row] = IN_PROGRESS
        self.size += 1
        start = row - self.horizon  # its chunk's bootstrap observation is the row just stored
        if start >= self.episode_start:
            self._starts[self.num_starts] = start
            self.num_starts += 1
            self.starts = self._starts[: self.num_starts]
        return row

    # -- sampling ----------------------------------------------------------------------------------------------

    @property
    def online_starts(self) -> int:
        """valid chunks in online rows"""
        return self.num_starts - self.offline_starts

    def draw_starts(self, batch_size: int) -> torch.Tensor:
        if self.offline_ratio is None:
            return super().draw_starts(batch_size)
        offline, online = self.offline_starts, self.online_starts
        from_offline = batch_size if online == 0 else min(round(self.offline_ratio * batch_size), batch_size)
        if offline == 0:
            from_offline = 0
        device, generator = self.index_device, self.generator
        picks = torch.cat([torch.randint(offline or 1, (from_offline,), device=device, generator=generator),
                           offline + torch.randint(online or 1, (batch_size - from_offline,), device=device,
                                                   generator=generator)])
        return self.starts[picks]


def grow_to(tensor: torch.Tensor, rows: int, used: int) -> torch.Tensor:
    """A `rows`-row copy of `tensor` holding its first `used` rows (the rest uninitialised)."""
    bigger = torch.empty((rows, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    bigger[:used] = tensor[:used]
    return bigger
