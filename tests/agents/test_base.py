"""Options every chunked actor-critic agent has: compiled networks, channels-last convolutions, action bounds."""

import torch

from tests.agents.test_lps import SMALL, image_agent, image_batch, make_agent, random_batch
from visual_lps.agents.lps import LPSAgent, LPSConfig


def test_compiled_networks_keep_their_names_and_results():
    eager, compiled = make_agent(), make_agent()
    compiled.compile_networks()
    assert list(eager.state_dict()) == list(compiled.state_dict())  # checkpoints load either way
    batch = random_batch(eager)
    torch.manual_seed(1)
    eager_loss, _ = eager(batch)
    torch.manual_seed(1)
    compiled_loss, _ = compiled(batch)
    assert torch.allclose(eager_loss, compiled_loss, rtol=1e-4, atol=1e-5)


def test_channels_last_convolutions_compute_the_same_features():
    agent, batch = image_agent(augment_prob=0.0), image_batch()
    expected = agent.encode(batch["observations"])["critic"]
    agent.to(memory_format=torch.channels_last)
    conv = agent.encoder.trunk[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(agent.encode(batch["observations"])["critic"], expected, atol=1e-5)


def test_action_bounds_map_to_and_from_the_unit_box():
    agent = make_agent()
    agent.set_action_bounds(torch.tensor([0.0, 5.0]), torch.tensor([2.0, 5.0]))  # the second never varies
    actions = torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0]])
    normalized = agent.normalize_actions(actions)
    assert normalized.tolist() == [[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]
    assert torch.allclose(agent.unnormalize_actions(normalized), actions)
    assert "action_low" in agent.state_dict()  # travels with every checkpoint


def test_state_statistics_reach_every_encoder_including_the_target_copy():
    spec = {"front_image": (16, 16, 3), "joints": (3,)}
    agent = LPSAgent(LPSConfig(encoder="impala_small", shared_encoder=False, **SMALL), obs_spec=spec, action_dim=2)
    agent.set_state_statistics({"joints": torch.tensor([1.0, 2.0, 3.0])}, {"joints": torch.tensor([4.0, 5.0, 6.0])})
    for encoder in [*agent.encoders.values(), agent.target_encoder]:
        assert encoder.state_mean.tolist() == [1.0, 2.0, 3.0] and encoder.state_std.tolist() == [4.0, 5.0, 6.0]
