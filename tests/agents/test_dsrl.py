"""DSRL (noise-aliased): which loss trains what, and on the toy problem the paying mode inside the support."""

import torch

from tests.agents.routing import image_batch, reaches
from tests.agents.toy import assert_picks_the_paying_mode_inside_the_support, train_on_toy, two_mode_bandit
from visual_lps.agents.dsrl import DSRLAgent, DSRLConfig

SMALL = dict(critic_hidden_dims=(32, 32), prior_hidden_dims=(32, 32), actor_hidden_dims=(32,),
             latent_critic_hidden_dims=(32, 32))


def test_each_loss_reaches_its_own_networks_and_the_shared_encoder_only_from_critic_and_prior():
    torch.manual_seed(0)
    agent = DSRLAgent(DSRLConfig(encoder="impala_small", frame_stack=2, augment_prob=1.0, horizon=2, **SMALL),
                      obs_spec=(2, 16, 16, 3), action_dim=2)
    batch = image_batch(agent)
    features, next_features = agent.encode_transition(batch)
    parts = {"encoder": agent.encoders.encoder, "critic": agent.critic, "prior": agent.prior,
             "actor": agent.actor, "latent_critic": agent.latent_critic, "target_critic": agent.target_critic}
    next_actions = agent.policy_actions(next_features).detach()
    critic_loss = agent.critic_loss(features["critic"], next_features["target"], batch, next_actions)[0]
    prior_loss = agent.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])[0]
    latent_loss = agent.latent_critic_loss(features, batch["random"]["aliasing"])[0]
    actor_loss = agent.actor_loss(features)[0]
    assert reaches(critic_loss, agent, parts) == {"encoder", "critic"}
    assert reaches(prior_loss, agent, parts) == {"encoder", "prior"}
    assert reaches(latent_loss, agent, parts) == {"latent_critic"}  # the action critic is its fixed target
    assert reaches(actor_loss, agent, parts) == {"actor"}  # through the frozen latent critic, never the prior
    loss, metrics = agent(batch)
    assert {"critic/loss", "prior/loss", "latent_critic/loss", "actor/loss"} <= set(metrics)


def test_latent_critic_regresses_onto_the_action_critic_of_the_decoded_noise():
    torch.manual_seed(0)
    agent = DSRLAgent(DSRLConfig(**SMALL), obs_spec=(3,), action_dim=2)
    features = agent.encode(torch.randn(6, 3))
    w = torch.randn(6, agent.chunk_dim)
    loss, _ = agent.latent_critic_loss(features, w)
    target = agent.critic(features["critic"], agent.prior.sample(features["prior"], w)).mean(dim=0)
    expected = (agent.latent_critic(features["latent_critic"], w) - target).pow(2).mean()
    assert torch.allclose(loss, expected)


def test_picks_the_paying_mode_inside_the_support_of_the_toy_problem(one_thread):
    data = two_mode_bandit(seed=0)
    torch.manual_seed(0)
    config = DSRLConfig(horizon=1, critic_hidden_dims=(64, 64), prior_hidden_dims=(64, 64), actor_hidden_dims=(32,),
                        latent_critic_hidden_dims=(64, 64))
    agent = DSRLAgent(config, obs_spec=(1,), action_dim=2)
    train_on_toy(agent, data, seed=0, steps=1500)
    assert_picks_the_paying_mode_inside_the_support(agent, data)
