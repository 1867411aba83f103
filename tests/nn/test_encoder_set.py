"""The encoder set: roles, what trains the shared encoder, and its state dict round trip."""

import pytest
import torch

from tests.agents.test_lps import SMALL
from visual_lps.agents.lps import LPSAgent, LPSConfig

@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-network"])
def test_a_state_dict_of_this_version_loads_into_a_fresh_agent(shared: bool):
    def make(seed: int) -> LPSAgent:
        torch.manual_seed(seed)
        config = LPSConfig(encoder="impala_small", shared_encoder=shared, horizon=2, **SMALL)
        return LPSAgent(config, obs_spec=(16, 16, 3), action_dim=2)

    trained, fresh = make(0), make(1)
    fresh.load_state_dict(trained.state_dict())  # strict: every key of this version's layout, no renaming
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_roles_read_one_shared_encoder_and_only_the_training_roles_keep_its_gradient():
    torch.manual_seed(0)
    agent = LPSAgent(LPSConfig(encoder="impala_small", horizon=2, **SMALL), obs_spec=(16, 16, 3), action_dim=2)
    frames = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    features, next_features = agent.encoders.transition({"observations": frames, "next_observations": frames},
                                                        ("prior", "target"))
    assert set(features) == {"critic", "prior", "actor"} and set(next_features) == {"prior", "target"}
    assert features["critic"].requires_grad and features["prior"].requires_grad  # encoder_trained_by
    assert not features["actor"].requires_grad
    assert torch.equal(features["actor"], features["critic"].detach())  # encoded once
    assert not any(f.requires_grad for f in next_features.values())
