"""MeanFlow BC: the one-step MeanFlow prior alone, no critic; it reproduces the data's modes."""

import torch

from tests.agents.toy import assert_reproduces_both_modes, train_on_toy, two_mode_bandit
from visual_lps.agents.meanflow_bc import MeanFlowBCAgent, MeanFlowBCConfig


def make(**overrides) -> MeanFlowBCAgent:
    torch.manual_seed(0)
    config = MeanFlowBCConfig(**({"prior_hidden_dims": (32, 32)} | overrides))
    return MeanFlowBCAgent(config, obs_spec=(3,), action_dim=2)


def test_has_no_critic_and_every_parameter_is_trained_by_the_prior_loss():
    agent = make()
    assert not hasattr(agent, "critic") and agent.progress_metrics == ("prior/loss",)
    batch = {"observations": torch.randn(8, 3), "next_observations": torch.randn(8, 3),
             "actions": torch.rand(8, 5, 2) * 2 - 1, "rewards": torch.zeros(8, 5), "masks": torch.ones(8, 5),
             "random": agent.draw_random_inputs(8, torch.device("cpu"))}
    loss, metrics = agent(batch)
    loss.backward()
    assert set(metrics) == {"prior/loss", "prior/mse"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.parameters())


def test_image_encoder_is_trained_by_the_prior_loss():
    torch.manual_seed(0)
    agent = MeanFlowBCAgent(MeanFlowBCConfig(encoder="impala_small", horizon=2, augment_prob=1.0, prior_hidden_dims=(32,)),
                        obs_spec=(16, 16, 3), action_dim=2)
    frames = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    batch = {"observations": frames, "next_observations": frames, "actions": torch.zeros(4, 2, 2),
             "rewards": torch.zeros(4, 2), "masks": torch.ones(4, 2),
             "random": agent.draw_random_inputs(4, torch.device("cpu"))}
    agent(batch)[0].backward()
    assert all(p.grad is not None for p in agent.encoders.encoder.parameters())


def test_reproduces_both_modes_of_the_toy_problem(one_thread):
    data = two_mode_bandit(seed=0)
    torch.manual_seed(0)
    agent = MeanFlowBCAgent(MeanFlowBCConfig(horizon=1, prior_hidden_dims=(64, 64)), obs_spec=(1,), action_dim=2)
    train_on_toy(agent, data, seed=0, steps=2000)
    torch.manual_seed(1)
    assert_reproduces_both_modes(agent.act(torch.ones(2000, 1)), data)
