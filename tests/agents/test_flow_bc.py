"""Flow BC (the public code's `agents/flow.py`): a 10-step flow-matching policy alone from Gaussian noise, no
critic; it reproduces the data's modes."""

import torch

from tests.agents.routing import image_batch, reaches
from tests.agents.toy import assert_reproduces_both_modes, train_on_toy, two_mode_bandit
from visual_lps.agents.flow_bc import FlowBCAgent, FlowBCConfig


def test_has_no_critic_and_the_flow_loss_trains_the_policy_and_the_shared_encoder():
    torch.manual_seed(0)
    agent = FlowBCAgent(FlowBCConfig(encoder="impala_small", horizon=2, augment_prob=1.0, bc_flow_hidden_dims=(32,)),
                        obs_spec=(16, 16, 3), action_dim=2)
    assert not hasattr(agent, "critic") and agent.progress_metrics == ("bc_flow/loss",)
    batch = image_batch(agent, batch_size=4)
    loss, metrics = agent(batch)
    assert set(metrics) == {"bc_flow/loss"}
    assert reaches(loss, agent, {"encoder": agent.encoders.encoder, "bc_flow": agent.bc_flow}) == {"encoder",
                                                                                                   "bc_flow"}


def test_the_loss_is_flow_matching_with_gaussian_noise_and_sampling_takes_flow_steps_calls():
    torch.manual_seed(0)
    agent = FlowBCAgent(FlowBCConfig(bc_flow_hidden_dims=(16,), flow_steps=7), obs_spec=(3,), action_dim=2)
    assert agent.bc_flow.noise == "normal" and agent.bc_flow.steps == 7
    features = torch.randn(5, 3)
    actions = torch.rand(5, agent.chunk_dim) * 2 - 1
    noise = agent.bc_flow.draw_noise(5, torch.device("cpu"))
    x0, t = noise["noise"], noise["t"]
    velocity = agent.bc_flow(features, (1 - t) * x0 + t * actions, t)
    torch.testing.assert_close(agent.bc_flow.loss(features, actions, noise)[0], (velocity - (actions - x0)).pow(2).mean())
    calls = []
    agent.bc_flow.net.register_forward_hook(lambda *_: calls.append(1))
    agent.bc_flow.sample(features, x0)
    assert len(calls) == 7


def test_reproduces_both_modes_of_the_toy_problem(one_thread):
    data = two_mode_bandit(seed=0)
    torch.manual_seed(0)
    agent = FlowBCAgent(FlowBCConfig(horizon=1, bc_flow_hidden_dims=(64, 64)), obs_spec=(1,), action_dim=2)
    train_on_toy(agent, data, seed=0, steps=1500)
    torch.manual_seed(1)
    assert_reproduces_both_modes(agent.act(torch.ones(2000, 1)), data)
