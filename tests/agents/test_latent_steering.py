"""What LPS and DSRL share (visual_lps.agents.latent_steering): one objective of three parts, and validation
that sets the policy's action error beside the prior's own without touching the training random streams."""

import pytest
import torch

from tests.agents.test_lps import random_batch
from visual_lps.agents.dsrl import DSRLAgent, DSRLConfig
from visual_lps.agents.latent_steering import LatentSteeringAgent
from visual_lps.agents.lps import LPSAgent, LPSConfig

SMALL = dict(prior_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), actor_hidden_dims=(32,))
AGENTS = {"lps": (LPSConfig(**SMALL), LPSAgent),
          "dsrl": (DSRLConfig(**SMALL, latent_critic_hidden_dims=(32, 32)), DSRLAgent)}


def make(name: str) -> LatentSteeringAgent:
    torch.manual_seed(0)
    config, agent_class = AGENTS[name]
    return agent_class(config, obs_spec=(3,), action_dim=2)


@pytest.mark.parametrize("name", list(AGENTS))
def test_the_objective_is_the_critic_the_prior_and_the_steering_loss(name: str):
    agent = make(name)
    batch = random_batch(agent)
    total, metrics = agent(batch)
    features, next_features = agent.encode_transition(batch)
    critic = agent.critic_loss(features["critic"], next_features["target"], batch,
                               agent.policy_actions(next_features).detach())[0]
    prior = agent.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])[0]
    steering, steering_metrics = agent.steering_loss(features, batch)
    torch.testing.assert_close(total, critic + prior + steering)
    assert set(steering_metrics) <= set(metrics) and "actor/loss" in steering_metrics


@pytest.mark.parametrize("name", list(AGENTS))
def test_validation_sets_the_prior_beside_the_policy_and_leaves_the_random_streams_alone(name: str):
    agent = make(name)
    batch = random_batch(agent)
    state = torch.random.get_rng_state()
    first = agent.validation_metrics(batch)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert {"valid/action_mse", "valid/prior_action_mse", "valid/q_demo", "valid/q_policy"} <= set(first)
    noise = torch.randn(16, agent.chunk_dim, generator=torch.Generator().manual_seed(0))
    noise = noise / noise.norm(dim=-1, keepdim=True) * agent.chunk_dim**0.5
    features = agent.encode(batch["observations"])
    by_hand = (agent.prior.sample(features["prior"], noise) - batch["actions"].flatten(1)).pow(2).mean()
    torch.testing.assert_close(first["valid/prior_action_mse"], by_hand)
    assert not torch.equal(first["valid/prior_action_mse"], first["valid/action_mse"])
