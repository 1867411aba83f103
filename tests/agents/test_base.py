"""What every chunked actor-critic agent has: channels-last convolutions, action bounds, state statistics and a
compiled `act`."""

import pytest
import torch

from tests.agents.test_lps import SMALL, image_agent, image_batch, make_agent
from tests.training.test_update import KINDS, CountingBackend, batches, make
from visual_lps.agents.lps import LPSAgent, LPSConfig


def test_channels_last_convolutions_compute_the_same_features():
    agent = image_agent(augment_prob=0.0)
    batch = image_batch(agent)
    expected = agent.encode(batch["observations"])["critic"]
    agent.to(memory_format=torch.channels_last)
    conv = agent.encoders.encoder.trunk[0].weight
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
    for encoder in agent.encoders.all_encoders():
        assert encoder.state_mean.tolist() == [1.0, 2.0, 3.0] and encoder.state_std.tolist() == [4.0, 5.0, 6.0]


@pytest.mark.parametrize("kind", list(KINDS))
def test_act_compiles_as_one_graph_and_returns_the_eager_chunks(kind: str):
    torch._dynamo.reset()
    agent = make(kind).eval()
    obs = batches(agent, 1)[0]["observations"]
    one = obs[:1] if isinstance(obs, torch.Tensor) else {k: v[:1] for k, v in obs.items()}
    expected = agent.act(one)
    backend = CountingBackend()
    agent.compile_act(backend=backend)
    for _ in range(3):
        assert torch.equal(agent.act(one), expected)
    assert backend.graphs == 1


def test_act_compiled_by_inductor_returns_the_eager_chunks():
    """Inductor's code (not only dynamo's trace) on cameras and proprioception, under inference mode."""
    torch._dynamo.reset()
    agent = make("cameras+proprioception").eval()
    obs = {k: v[:1] for k, v in batches(agent, 1)[0]["observations"].items()}
    expected = agent.act(obs)
    agent.compile_act(cuda_graphs=True)  # as on a GPU; a CPU graph has no CUDA graphs to replay
    assert torch.allclose(agent.act(obs), expected, atol=1e-5)


def test_act_goes_on_eagerly_when_compiling_fails_and_says_so_once(capsys):
    from tests.training.test_update import failing_backend

    torch._dynamo.reset()
    agent = make("state").eval()
    obs = batches(agent, 1)[0]["observations"][:1]
    expected = agent.act(obs)
    agent.compile_act(backend=failing_backend)
    for _ in range(3):
        assert torch.equal(agent.act(obs), expected)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "compiling `act` failed" in said[0] and "--no-compile" in said[0]
