"""DSRL (noise-aliased): which loss trains what, over the paper's 10-step flow BC policy and over a MeanFlow
prior, and on the toy problem the paying mode inside the support."""

import pytest
import torch

from tests.agents.routing import image_batch, reaches
from tests.agents.toy import assert_picks_the_paying_mode_inside_the_support, train_on_toy, two_mode_bandit
from visual_lps.agents.dsrl import DSRLAgent, DSRLConfig
from visual_lps.nn.flow_policy import FlowPolicy
from visual_lps.nn.meanflow import MeanFlowPrior

SMALL = dict(critic_hidden_dims=(32, 32), bc_flow_hidden_dims=(32, 32), prior_hidden_dims=(32, 32),
             actor_hidden_dims=(32,), latent_critic_hidden_dims=(32, 32), flow_steps=3)


def test_the_defaults_are_the_reference_s():
    config = DSRLConfig()
    assert (config.prior, config.flow_steps, config.bc_flow_hidden_dims) == ("flow", 10, (512,) * 4)
    assert config.actor_hidden_dims == (512,) * 4 and config.critic_target == "mean"
    agent = DSRLAgent(DSRLConfig(**SMALL), obs_spec=(3,), action_dim=2)
    assert isinstance(agent.prior, FlowPolicy) and agent.prior.noise == "sphere"  # the latent actor's sphere
    assert isinstance(DSRLAgent(DSRLConfig(**SMALL, prior="meanflow"), (3,), 2).prior, MeanFlowPrior)


@pytest.mark.parametrize("prior", ["flow", "meanflow"])
def test_each_loss_reaches_its_own_networks_and_the_shared_encoder_only_from_critic_and_prior(prior: str):
    torch.manual_seed(0)
    agent = DSRLAgent(DSRLConfig(encoder="impala_small", frame_stack=2, augment_prob=1.0, horizon=2, prior=prior,
                                 **SMALL), obs_spec=(2, 16, 16, 3), action_dim=2)
    batch = image_batch(agent)
    features, next_features = agent.encode_transition(batch)
    parts = {"encoder": agent.encoders.encoder, "critic": agent.critic, "prior": agent.prior,
             "actor": agent.actor, "latent_critic": agent.latent_critic, "target_critic": agent.target_critic}
    next_actions = agent.policy_actions(next_features).detach()
    critic_loss = agent.critic_loss(features["critic"], next_features["target"], batch, next_actions)[0]
    prior_loss = agent.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])[0]
    aliasing_loss = agent.aliasing_loss(features, batch["random"]["aliasing"])[0]
    actor_loss = agent.actor_loss(features)[0]
    assert reaches(critic_loss, agent, parts) == {"encoder", "critic"}
    assert reaches(prior_loss, agent, parts) == {"encoder", "prior"}
    assert reaches(aliasing_loss, agent, parts) == {"latent_critic"}  # the action critic is its fixed target
    assert reaches(actor_loss, agent, parts) == {"actor"}  # through the frozen noise critic, never the prior
    total, metrics = agent(batch)
    torch.testing.assert_close(total, critic_loss + prior_loss + aliasing_loss + actor_loss)
    assert {"critic/loss", "latent_critic/loss", "actor/loss"} <= set(metrics)


def test_the_noise_critic_regresses_onto_the_action_critic_of_the_decoded_noise():
    torch.manual_seed(0)
    agent = DSRLAgent(DSRLConfig(**SMALL), obs_spec=(3,), action_dim=2)
    features = agent.encode(torch.randn(6, 3))
    w = agent.prior.sample_noise(6, torch.device("cpu"))
    loss, _ = agent.aliasing_loss(features, w)
    target = agent.critic(features["critic"], agent.prior.sample(features["prior"], w)).mean(dim=0)
    expected = (agent.latent_critic(features["latent_critic"], w) - target).pow(2).mean()
    assert torch.allclose(loss, expected)


def test_the_policy_decodes_the_actor_s_noise_through_flow_steps_calls():
    torch.manual_seed(0)
    agent = DSRLAgent(DSRLConfig(**SMALL), obs_spec=(3,), action_dim=2)
    features = agent.encode(torch.randn(4, 3))
    calls = []
    agent.prior.net.register_forward_hook(lambda *_: calls.append(1))
    actions = agent.policy_actions(features)
    assert len(calls) == 3
    torch.testing.assert_close(actions, agent.prior.sample(features["prior"], agent.actor(features["actor"])))


def test_picks_the_paying_mode_inside_the_support_of_the_toy_problem(one_thread):
    data = two_mode_bandit(seed=0)
    torch.manual_seed(0)
    config = DSRLConfig(horizon=1, critic_hidden_dims=(64, 64), bc_flow_hidden_dims=(64, 64), actor_hidden_dims=(32,),
                        latent_critic_hidden_dims=(64, 64))
    agent = DSRLAgent(config, obs_spec=(1,), action_dim=2)
    train_on_toy(agent, data, seed=0, steps=1500)
    assert_picks_the_paying_mode_inside_the_support(agent, data)
