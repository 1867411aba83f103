import numpy as np
import pytest
import torch

from visual_lps.data.chunks import ChunkSampler, DataNeeds, OfflineData, choose_placement, chunk_starts


def episodes_data(lengths: list[int]) -> OfflineData:
    """Rows numbered 0..N-1 in observations and actions, so a batch shows exactly which rows it used."""
    n = sum(lengths)
    ends = np.zeros(n, bool)
    ends[np.cumsum(lengths) - 1] = True
    rows = np.arange(n, dtype=np.float32)
    episode = np.repeat(np.arange(len(lengths)), lengths).astype(np.float32)
    return OfflineData(
        observations=np.stack([rows, episode], axis=1),
        actions=rows[:, None],
        rewards=rows.copy(),
        masks=np.ones(n, np.float32),
        episode_ends=ends,
    )


def test_chunk_starts_leave_room_for_the_chunk_and_its_bootstrap_observation():
    ends = np.array([0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1], bool)  # episodes of 5, 3 and 6 rows
    assert chunk_starts(ends, 2).tolist() == [0, 1, 2, 5, 8, 9, 10, 11]
    assert chunk_starts(ends, 4).tolist() == [0, 8, 9]
    assert chunk_starts(ends, 6).tolist() == []


def test_unterminated_tail_counts_as_an_episode():
    assert chunk_starts(np.array([0, 0, 1, 0, 0, 0], bool), 2).tolist() == [0, 3]


@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_sampled_chunks_never_cross_an_episode_end(horizon):
    data = episodes_data([7, 5, 12, 6, 9])
    sampler = ChunkSampler(data, DataNeeds(horizon), device="cpu", seed=0)
    batch = sampler.sample(4096)
    start = batch["observations"][:, 0]
    episode = batch["observations"][:, 1]
    assert torch.equal(batch["actions"][:, :, 0], start[:, None] + torch.arange(horizon))
    assert torch.equal(batch["rewards"], start[:, None] + torch.arange(horizon))
    assert torch.equal(batch["next_observations"][:, 0], start + horizon)
    assert torch.equal(batch["next_observations"][:, 1], episode)  # the bootstrap state is in the same episode
    assert len(torch.unique(start)) == len(chunk_starts(data.episode_ends, horizon))  # every start is drawn


def test_sampler_resumes_its_random_stream():
    data = episodes_data([20, 20])
    a = ChunkSampler(data, DataNeeds(3), "cpu", seed=1)
    a.sample(8)
    state = a.state_dict()
    expected = a.sample(8)["observations"]
    b = ChunkSampler(data, DataNeeds(3), "cpu", seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.sample(8)["observations"], expected)


def test_mismatched_lengths_are_named():
    with pytest.raises(ValueError, match="'actions' has 3 rows"):
        OfflineData(np.zeros((4, 2)), np.zeros((3, 1)), np.zeros(4), np.zeros(4), np.zeros(4, bool))


def test_episodes_shorter_than_the_horizon_give_a_clear_error():
    with pytest.raises(ValueError, match="chunk horizon 5"):
        ChunkSampler(episodes_data([3, 4]), DataNeeds(5), device="cpu", seed=0)


def test_frame_stacks_repeat_the_first_frame_at_episode_starts_and_never_mix_episodes():
    data = episodes_data([4, 6])  # rows 0..3 and 4..9
    sampler = ChunkSampler(data, DataNeeds(2, 3), device="cpu", seed=0)
    rows = sampler.stacked_observations(torch.tensor([0, 1, 2, 4, 5, 7]))[:, :, 0]
    assert rows.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [4, 4, 4], [4, 4, 5], [5, 6, 7]]
    batch = sampler.sample(512)
    assert batch["observations"].shape == (512, 3, 2)
    for key in ("observations", "next_observations"):
        episode = batch[key][:, :, 1]
        assert (episode == episode[:, :1]).all()  # one episode per stack
    assert torch.equal(batch["next_observations"][:, -1, 0], batch["observations"][:, -1, 0] + 2)


def test_named_observations_are_indexed_and_stacked_alike():
    flat = episodes_data([4, 6])
    images = np.repeat(np.arange(10, dtype=np.uint8), 2 * 2 * 3).reshape(10, 2, 2, 3)  # frame i is filled with i
    data = OfflineData({"front_image": images, "state": flat.observations}, flat.actions, flat.rewards,
                       flat.masks, flat.episode_ends)
    sampler = ChunkSampler(data, DataNeeds(2, 3), device="cpu", seed=0)
    batch = sampler.sample(64)
    assert batch["observations"]["front_image"].shape == (64, 3, 2, 2, 3)
    assert batch["observations"]["front_image"].dtype == torch.uint8  # moved as uint8
    assert torch.equal(batch["observations"]["front_image"][:, :, 0, 0, 0].long(),
                       batch["observations"]["state"][:, :, 0].long())
    assert torch.equal(batch["next_observations"]["state"][:, -1, 0], batch["actions"][:, 0, 0] + 2)


def test_named_observations_of_different_lengths_are_named():
    with pytest.raises(ValueError, match="differ in length"):
        OfflineData({"a_image": np.zeros((4, 2, 2, 3)), "state": np.zeros((3, 2))}, np.zeros((4, 1)), np.zeros(4),
                    np.zeros(4), np.zeros(4, bool))


def test_host_placement_draws_the_same_batches_as_device_placement():
    """On a CPU both placements are host memory: the host path (index_select into buffers, indices drawn beside
    the observations) must give exactly the batches of the device path, random inputs included."""
    base = episodes_data([7, 5, 12, 6, 9])
    n = len(base.actions)
    images = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    data = OfflineData({"front_image": images, "joints": base.observations}, base.actions, base.rewards, base.masks,
                       base.episode_ends)

    def draw(batch_size, device, generator):
        return {"noise": torch.randn(batch_size, 3, device=device, generator=generator)}

    batches = {}
    for placement in ("device", "host"):
        sampler = ChunkSampler(data, DataNeeds(3, 2), device="cpu", seed=5, draw_random=draw,
                               placement=placement)
        assert sampler.placement == placement
        batches[placement] = [sampler.sample(64) for _ in range(3)]
    for on_device, on_host in zip(batches["device"], batches["host"]):
        for key in ("actions", "rewards", "masks"):
            assert torch.equal(on_device[key], on_host[key])
        for key in ("observations", "next_observations"):
            for name in ("front_image", "joints"):
                assert torch.equal(on_device[key][name], on_host[key][name])
        assert torch.equal(on_device["random"]["noise"], on_host["random"]["noise"])


def test_placement_rule_keeps_data_on_a_gpu_only_when_it_fits_in_half_its_free_memory(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (40 * gib, 80 * gib))
    cuda = torch.device("cuda", 0)
    assert choose_placement(20 * gib, cuda)[0] == "device"
    placement, reason = choose_placement(98 * gib, cuda)
    assert placement == "host" and "in host memory" in reason and "98.00 GiB" in reason
    assert choose_placement(98 * gib, torch.device("cpu"))[0] == "device"  # a CPU's device is host memory
    assert choose_placement(1, cuda, "host")[0] == "host"
    with pytest.raises(ValueError, match="--data-on 'gpu'"):
        choose_placement(1, cuda, "gpu")
