import numpy as np
import pytest
import torch

from tests.data.test_chunks import episodes_data
from visual_lps.data.chunks import DataNeeds, OfflineData
from visual_lps.data.replay import ReplayBuffer

ONLINE = 1000.0
"""online rows carry 1000 + their step number in column 0 and their episode id (from 100) in column 1"""


def add_online_episode(buffer: ReplayBuffer, episode: int, steps: int) -> list[tuple]:
    """An episode of `steps` steps and its final observation; returns the rows as (observation, action, reward,
    mask)."""
    rows = []
    buffer.begin_episode(steps + 1)
    for t in range(steps + 1):
        obs = np.array([ONLINE + t, 100 + episode], np.float32)
        action, reward, mask = np.array([ONLINE + t], np.float32), float(t), float(t != steps - 1)
        if t < steps:
            buffer.add(obs, action, reward, mask)
        else:
            action, reward, mask = np.zeros(1, np.float32), 0.0, 1.0
            buffer.end_episode(obs, reward, mask)
        rows.append((obs, action, reward, mask))
    return rows


def stored(buffer: ReplayBuffer, first: int, count: int) -> list[tuple]:
    return [(buffer.observations[i].numpy(), buffer.actions[i].numpy(), float(buffer.rewards[i]), float(buffer.masks[i]))
            for i in range(first, first + count)]


def test_the_buffer_holds_exactly_what_the_environment_produced_after_the_offline_rows():
    data = episodes_data([7, 5])
    buffer = ReplayBuffer(data, DataNeeds(2), "cpu", seed=0)
    first = add_online_episode(buffer, 0, 6)
    second = add_online_episode(buffer, 1, 3)
    assert buffer.size == 12 + 7 + 4
    assert torch.equal(buffer.observations[:12], torch.from_numpy(data.observations))  # the offline rows are kept
    for got, want in zip(stored(buffer, 12, 11), first + second):
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2:] == want[2:]
    # episode boundaries: each online row knows its episode's first and last row
    assert buffer.episode_first[12:19].tolist() == [12] * 7 and buffer.episode_last[12:19].tolist() == [18] * 7
    assert buffer.episode_first[19:23].tolist() == [19] * 4 and buffer.episode_last[19:23].tolist() == [22] * 4


@pytest.mark.parametrize("horizon", [1, 3])
def test_chunks_never_cross_an_online_episode_end_nor_read_the_episode_in_progress(horizon):
    buffer = ReplayBuffer(episodes_data([6]), DataNeeds(horizon, frame_stack=2), "cpu", seed=0)
    add_online_episode(buffer, 0, 5)
    buffer.begin_episode(10)  # in progress: 3 steps stored so far
    for t in range(3):
        buffer.add(np.array([ONLINE + t, 200], np.float32), np.array([ONLINE + t], np.float32), 0.0, 1.0)
    batch = buffer.sample(4096)
    obs, nxt = batch["observations"], batch["next_observations"]  # (B, 2 frames, 2)
    assert torch.equal(nxt[:, -1, 1], obs[:, -1, 1])  # the bootstrap observation is in the chunk's episode
    assert torch.equal(nxt[:, -1, 0], obs[:, -1, 0] + horizon)
    assert torch.equal(obs[:, 0, 1], obs[:, -1, 1])  # frame stacks stay in the episode too
    in_progress = obs[:, -1, 1] == 200
    # a chunk of the episode in progress only once its bootstrap observation is stored
    assert set(obs[in_progress, -1, 0].tolist()) == {ONLINE + t for t in range(3 - horizon)}
    online = obs[:, -1, 1] == 100
    assert set(obs[online, -1, 0].tolist()) == {ONLINE + t for t in range(5 - horizon + 1)}


def test_capacity_drops_the_oldest_episodes_offline_first_and_refuses_less_than_the_offline_data():
    data = episodes_data([4, 4, 4])
    with pytest.raises(ValueError, match="--buffer-capacity 11 is smaller than the offline data"):
        ReplayBuffer(data, DataNeeds(1), "cpu", seed=0, capacity=11)
    buffer = ReplayBuffer(data, DataNeeds(1), "cpu", seed=0, capacity=16)
    add_online_episode(buffer, 0, 3)  # 4 rows: fits exactly
    assert buffer.size == 16 and buffer.offline_rows == 12
    add_online_episode(buffer, 1, 3)  # the oldest offline episode makes room
    assert buffer.size == 16 and buffer.offline_rows == 8
    assert buffer.observations[0, 1].item() == 1  # offline episode 1 is now first
    batch = buffer.sample(2048)
    assert not (batch["observations"][:, 1] == 0).any()  # the dropped episode is never sampled
    assert torch.equal(batch["next_observations"][:, 1], batch["observations"][:, 1])
    assert set(batch["observations"][:, 1].tolist()) == {1.0, 2.0, 100.0, 101.0}


def test_offline_ratio_fixes_the_share_of_each_batch_from_the_offline_rows():
    buffer = ReplayBuffer(episodes_data([50]), DataNeeds(1), "cpu", seed=0, offline_ratio=0.25)
    assert (buffer.sample(64)["observations"][:, 0] < ONLINE).all()  # no online chunk yet: all offline
    add_online_episode(buffer, 0, 5)
    offline = buffer.sample(64)["observations"][:, 0] < ONLINE
    assert offline.sum().item() == 16
    with pytest.raises(ValueError, match="--offline-ratio 1.5"):
        ReplayBuffer(episodes_data([50]), DataNeeds(1), "cpu", seed=0, offline_ratio=1.5)


def test_a_stored_episode_read_back_gives_the_same_batches():
    """What a resumed run does: the offline data plus the episodes written to files, added whole."""
    data = episodes_data([9, 7])
    live = ReplayBuffer(data, DataNeeds(2), "cpu", seed=3)
    rows = add_online_episode(live, 0, 6)
    resumed = ReplayBuffer(data, DataNeeds(2), "cpu", seed=3)
    resumed.add_episode(OfflineData(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                                    np.array([r[2] for r in rows], np.float32),
                                    np.array([r[3] for r in rows], np.float32), np.arange(7) == 6))
    a, b = live.sample(256), resumed.sample(256)
    for key in ("observations", "next_observations", "actions", "rewards", "masks"):
        assert torch.equal(a[key], b[key]), key
