"""The encoder set: roles, what trains the shared encoder, and checkpoints from before it still load."""

import pytest
import torch

from tests.agents.test_lps import SMALL
from visual_lps.agents.lps import LPSAgent, LPSConfig

LEGACY = {"encoders.encoder.": "encoder.", "encoders.by_role.": "encoders.", "encoders.target.": "target_encoder."}


def legacy_keys(state: dict) -> dict:
    """A state dict as checkpoints wrote it before the encoder set existed."""
    renamed = {}
    for key, value in state.items():
        for new, old in LEGACY.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        renamed[key] = value
    return renamed


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-network"])
def test_checkpoints_written_before_the_encoder_set_load_into_it(shared: bool):
    def make(seed: int) -> LPSAgent:
        torch.manual_seed(seed)
        config = LPSConfig(encoder="impala_small", shared_encoder=shared, horizon=2, **SMALL)
        return LPSAgent(config, obs_spec=(16, 16, 3), action_dim=2)

    trained, fresh = make(0), make(1)
    old = legacy_keys(trained.state_dict())
    assert any(k.startswith("encoder." if shared else "target_encoder.") for k in old)
    fresh.load_state_dict(old)
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
