import pytest
import torch

from tests.agents.routing import reaches
from tests.agents.toy import (
    assert_picks_the_paying_mode_inside_the_support,
    assert_reproduces_both_modes,
    train_on_toy,
    two_mode_bandit,
)
from visual_lps.agents.dsrl import DSRLAgent, DSRLConfig
from visual_lps.agents.lps import LPSAgent, LPSConfig

SMALL = dict(prior_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), actor_hidden_dims=(32,))


def make_agent(**overrides) -> LPSAgent:
    torch.manual_seed(0)
    return LPSAgent(LPSConfig(**(SMALL | overrides)), obs_spec=(3,), action_dim=2)


def random_batch(agent: LPSAgent, batch_size: int = 16) -> dict[str, torch.Tensor]:
    h, a = agent.config.horizon, agent.action_dim
    return {
        "observations": torch.randn(batch_size, 3),
        "next_observations": torch.randn(batch_size, 3),
        "actions": torch.rand(batch_size, h, a) * 2 - 1,
        "rewards": -torch.rand(batch_size, h),
        "masks": torch.ones(batch_size, h),
        "random": agent.draw_random_inputs(batch_size, torch.device("cpu")),
    }


def grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_actor_loss_updates_the_actor_and_nothing_else():
    agent = make_agent()
    batch = random_batch(agent)
    batch["observations"].requires_grad_(True)  # stands for the encoder's parameters
    features, _ = agent.encode_transition(batch)
    loss, _ = agent.actor_loss(features)
    loss.backward()
    assert all(g is not None and g.abs().sum() > 0 for g in grads(agent.actor))
    for part in (agent.prior, agent.critic, agent.target_critic):
        assert all(g is None for g in grads(part))
    assert batch["observations"].grad is None  # the shared encoder is not updated by the actor loss


def test_each_loss_of_the_objective_reaches_its_own_network_and_only_it():
    agent = make_agent()
    batch = random_batch(agent)
    features = agent.encode(batch["observations"])["critic"]
    next_actions = agent.policy_actions(agent.encode(batch["next_observations"])).detach()
    parts = {"critic": agent.critic, "prior": agent.prior, "actor": agent.actor, "target_critic": agent.target_critic}
    critic_loss, _ = agent.critic_loss(features, features, batch, next_actions)
    assert reaches(critic_loss, agent, parts) == {"critic"}
    prior_loss, _ = agent.prior.loss(features, batch["actions"].flatten(1), batch["random"]["prior"])
    assert reaches(prior_loss, agent, parts) == {"prior"}
    actor_loss, _ = agent.actor_loss(agent.encode(batch["observations"]))
    assert reaches(actor_loss, agent, parts) == {"actor"}


def test_full_objective_gives_every_trainable_parameter_a_gradient():
    agent = make_agent()
    loss, metrics = agent(random_batch(agent))
    loss.backward()
    trainable = [p for p in agent.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert all(not p.requires_grad for p in agent.target_critic.parameters())
    assert {"critic/loss", "prior/loss", "actor/loss", "actor/z_norm"} <= set(metrics)
    assert torch.isclose(metrics["actor/z_norm"], torch.tensor(1.0))


class FixedEnsemble(torch.nn.Module):
    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.values = values

    def forward(self, features, actions):
        return self.values


def test_td_target_takes_min_over_target_ensemble_and_discounts_by_gamma_h():
    agent = make_agent(horizon=3, discount=0.9)
    agent.target_critic = FixedEnsemble(torch.tensor([[1.0, 5.0, -2.0], [3.0, 2.0, -4.0]]))
    batch = {
        "rewards": torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 2.0], [-1.0, 0.0, 0.0]]),
        "masks": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]),
    }
    y = agent.td_target(batch, torch.zeros(3, 3), torch.zeros(3, 6))
    expected = torch.tensor([1 + 0.9 + 0.81 + 0.729 * 1.0, 0.81 * 2 + 0.729 * 2.0, -1.0])
    assert torch.allclose(y, expected)


def test_polyak_moves_target_by_tau():
    agent = make_agent(tau=0.25)
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.target_critic.parameters()]
    agent.update_targets()
    for b, t, c in zip(before, agent.target_critic.parameters(), agent.critic.parameters()):
        assert torch.allclose(t, b + 0.25 * (c - b))


def test_lps_picks_the_paying_mode_inside_the_support_while_its_prior_keeps_both(one_thread):
    """The paying mode lies off the data's centre: a prior that collapsed to the mean, or an actor that pushed
    the prior, fails here."""
    data = two_mode_bandit(seed=0)
    torch.manual_seed(0)
    config = LPSConfig(horizon=1, prior_hidden_dims=(64, 64), critic_hidden_dims=(64, 64), actor_hidden_dims=(32,))
    agent = LPSAgent(config, obs_spec=(1,), action_dim=2)
    train_on_toy(agent, data, seed=0, steps=STEPS)
    with torch.no_grad():
        features = agent.encode(torch.ones(2000, 1))["prior"]
        unsteered = agent.prior.sample(features, agent.prior.sample_noise(2000, torch.device("cpu"),
                                                                          torch.Generator().manual_seed(1)))
    assert_reproduces_both_modes(unsteered, data)
    assert_picks_the_paying_mode_inside_the_support(agent, data)


STEPS = 2000


def image_batch(agent: LPSAgent, batch_size: int = 8) -> dict[str, torch.Tensor]:
    frames = torch.randint(0, 256, (batch_size, 2, 16, 16, 3), dtype=torch.uint8)
    return {"observations": frames, "next_observations": frames.flip(0), "actions": torch.rand(batch_size, 2, 2) * 2 - 1,
            "rewards": -torch.ones(batch_size, 2), "masks": torch.ones(batch_size, 2),
            "random": agent.draw_random_inputs(batch_size, torch.device("cpu"))}


def image_agent(**overrides) -> LPSAgent:
    torch.manual_seed(0)
    options = dict(encoder="impala_small", frame_stack=2, augment_prob=1.0, horizon=2) | SMALL | overrides
    return LPSAgent(LPSConfig(**options), obs_spec=(2, 16, 16, 3), action_dim=2)


def grads_after(agent: LPSAgent, loss: torch.Tensor, module: torch.nn.Module) -> list:
    agent.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return [p.grad for p in module.parameters()]


def reached(grads: list) -> bool:
    return all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def untouched(grads: list) -> bool:
    return all(g is None for g in grads)


def test_shared_image_encoder_is_trained_by_critic_and_prior_losses_not_by_the_actor_loss():
    agent = image_agent()
    batch = image_batch(agent)
    features, next_features = agent.encode_transition(batch)
    assert features["critic"] is features["prior"]  # encoded once for every network
    assert not any(f.requires_grad for f in next_features.values())  # TD targets never train the encoder

    assert untouched(grads_after(agent, agent.actor_loss(features)[0], agent.encoders.encoder))
    next_actions = agent.policy_actions(next_features).detach()
    assert reached(grads_after(agent, agent.critic_loss(features["critic"], next_features["target"], batch,
                                                        next_actions)[0], agent.encoders.encoder))
    prior_loss = agent.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])[0]
    assert reached(grads_after(agent, prior_loss, agent.encoders.encoder))
    assert agent.act(batch["observations"][:3]).shape == (3, 2, 2)


def test_per_network_encoders_are_each_trained_by_their_own_loss_only():
    agent = image_agent(shared_encoder=False)
    batch = image_batch(agent)
    assert set(agent.encoders.by_role) == {"critic", "prior", "actor"} and not hasattr(agent.encoders, "encoder")
    features, next_features = agent.encode_transition(batch)
    next_actions = agent.policy_actions(next_features).detach()
    losses = {
        "critic": agent.critic_loss(features["critic"], next_features["target"], batch, next_actions)[0],
        "prior": agent.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])[0],
        "actor": agent.actor_loss(features)[0],
    }
    for role, loss in losses.items():
        for other, encoder in agent.encoders.by_role.items():
            grads = grads_after(agent, loss, encoder)
            assert reached(grads) if other == role else untouched(grads), (role, other)
        assert untouched(grads_after(agent, loss, agent.encoders.target))

    # The target critic's encoder is a Polyak copy of the critic's.
    with torch.no_grad():
        for p in agent.encoders.by_role["critic"].parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.encoders.target.parameters()]
    agent.update_targets()
    for b, t, c in zip(before, agent.encoders.target.parameters(), agent.encoders.by_role["critic"].parameters()):
        assert torch.allclose(t, b + agent.config.tau * (c - b))


def test_cameras_and_proprioception_train_through_one_agent():
    spec = {"wrist_image": (2, 16, 16, 3), "front_image": (2, 24, 32, 3), "joint_pos": (2, 7)}
    torch.manual_seed(0)
    config = LPSConfig(encoder="impala_small", frame_stack=2, augment_prob=1.0, horizon=2, **SMALL)
    agent = LPSAgent(config, obs_spec=spec, action_dim=2)
    assert agent.feature_dim == 512 + 512 + 14

    def observations() -> dict[str, torch.Tensor]:
        return {"wrist_image": torch.randint(0, 256, (8, *spec["wrist_image"]), dtype=torch.uint8),
                "front_image": torch.randint(0, 256, (8, *spec["front_image"]), dtype=torch.uint8),
                "joint_pos": torch.randn(8, 2, 7)}

    batch = image_batch(agent) | {"observations": observations(), "next_observations": observations()}
    loss, _ = agent(batch)
    loss.backward()
    for camera in agent.encoders.encoder.cameras.values():
        assert reached([p.grad for p in camera.parameters()])
    assert agent.act(observations()).shape == (8, 2, 2)


def test_the_objective_is_the_critic_the_prior_and_the_actor_loss():
    agent = make_agent()
    batch = random_batch(agent)
    total, metrics = agent(batch)
    features, next_features = agent.encode_transition(batch)
    critic = agent.critic_loss(features["critic"], next_features["target"], batch,
                               agent.policy_actions(next_features).detach())[0]
    prior = agent.prior.loss(features["prior"], batch["actions"].flatten(1), batch["random"]["prior"])[0]
    actor, actor_metrics = agent.actor_loss(features)
    torch.testing.assert_close(total, critic + prior + actor)
    assert set(actor_metrics) <= set(metrics)


STEERED = {
    "lps": lambda: LPSAgent(LPSConfig(**SMALL), obs_spec=(3,), action_dim=2),
    "dsrl": lambda: DSRLAgent(DSRLConfig(**SMALL, bc_flow_hidden_dims=(32,), latent_critic_hidden_dims=(32,),
                                         flow_steps=2), obs_spec=(3,), action_dim=2),
    "dsrl-meanflow": lambda: DSRLAgent(DSRLConfig(**SMALL, latent_critic_hidden_dims=(32,), prior="meanflow"),
                                       obs_spec=(3,), action_dim=2),
}


@pytest.mark.parametrize("name", list(STEERED))
def test_validation_sets_the_prior_beside_the_policy_and_leaves_the_random_streams_alone(name: str):
    """`prior_action_mse`, which LPS and DSRL report: the unsteered prior's error from fixed-seed sphere noise."""
    torch.manual_seed(0)
    agent = STEERED[name]()
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
