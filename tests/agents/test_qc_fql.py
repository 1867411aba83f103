"""QC-FQL: which loss trains what, alpha per task, and on the toy problem (alpha tuned for it) the paying mode
inside the support."""

import pytest
import torch

from tests.agents.routing import image_batch, reaches
from tests.agents.toy import GOOD, distance_to_data, nearest_mode, train_on_toy, two_mode_bandit
from visual_lps.agents.qc_fql import QCFQLAgent, QCFQLConfig

SMALL = dict(critic_hidden_dims=(32, 32), bc_flow_hidden_dims=(32, 32), onestep_hidden_dims=(32,), alpha=3.0)


def make(obs_spec=(3,), **overrides) -> QCFQLAgent:
    torch.manual_seed(0)
    return QCFQLAgent(QCFQLConfig(**(SMALL | overrides)), obs_spec=obs_spec, action_dim=2)


def test_each_loss_reaches_its_own_networks_and_the_shared_encoder_only_from_critic_and_flow():
    agent = make((2, 16, 16, 3), encoder="impala_small", frame_stack=2, augment_prob=1.0, horizon=2)
    batch = image_batch(agent)
    features, next_features = agent.encode_transition(batch)
    parts = {"encoder": agent.encoders.encoder, "critic": agent.critic, "bc_flow": agent.bc_flow,
             "actor": agent.actor, "target_critic": agent.target_critic}
    next_actions = agent.policy_actions(next_features, batch["random"]["next"])
    critic_loss = agent.critic_loss(features["critic"], next_features["target"], batch, next_actions)[0]
    bc_loss = agent.bc_flow.loss(features["bc_flow"], batch["actions"].flatten(1), batch["random"]["bc_flow"])[0]
    actor_loss = agent.actor_loss(features, batch["random"]["distill"])[0]
    assert reaches(critic_loss, agent, parts) == {"encoder", "critic"}
    assert reaches(bc_loss, agent, parts) == {"encoder", "bc_flow"}
    assert reaches(actor_loss, agent, parts) == {"actor"}
    loss, metrics = agent(batch)
    assert {"critic/loss", "bc_flow/loss", "actor/distill", "actor/q"} <= set(metrics)


def test_without_a_published_alpha_the_task_needs_one_given():
    """The published alphas live with the tasks (tests/test_tasks.py); a robot dataset has none."""
    with pytest.raises(ValueError, match="--alpha"):
        QCFQLConfig().for_task("robot")


def test_policy_is_deterministic_given_its_noise_and_clipped():
    agent = make()
    features = agent.encode(torch.randn(4, 3))
    noise = torch.randn(4, agent.chunk_dim)
    assert torch.equal(agent.policy_actions(features, noise), agent.policy_actions(features, noise))
    assert agent.policy_actions(features, noise * 100).abs().max() <= 1.0


def test_picks_the_paying_mode_inside_the_support_of_the_toy_problem(one_thread):
    data = two_mode_bandit(seed=0)
    torch.manual_seed(0)
    config = QCFQLConfig(horizon=1, critic_hidden_dims=(64, 64), bc_flow_hidden_dims=(64, 64),
                         onestep_hidden_dims=(64, 64), alpha=0.3)  # the toy's Q scale wants a small alpha
    agent = QCFQLAgent(config, obs_spec=(1,), action_dim=2)
    train_on_toy(agent, data, seed=0, steps=1500)
    torch.manual_seed(1)
    actions = agent.act(torch.ones(1000, 1))  # one chunk per noise draw: the policy is stochastic
    assert (nearest_mode(actions) == GOOD).float().mean() > 0.9
    assert (distance_to_data(actions, data, paying_only=True) > 0.2).float().mean() < 0.1
