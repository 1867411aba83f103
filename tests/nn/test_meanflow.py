import math

import pytest
import torch

from visual_lps.nn.meanflow import MeanFlowPrior
from visual_lps.nn.sphere import project_to_sphere, sample_sphere


def make_prior(feature_dim: int = 3, action_dim: int = 4) -> MeanFlowPrior:
    torch.manual_seed(0)
    return MeanFlowPrior(feature_dim, action_dim, hidden_dims=(32, 32), t_mean=-0.4, t_std=1.0, flow_ratio=0.75,
                         loss_power=0.5, loss_eps=1e-3).double()


def test_target_matches_finite_differences_of_average_velocity():
    prior = make_prior()
    batch = 8
    s = torch.randn(batch, 3, dtype=torch.float64)
    z = torch.randn(batch, 4, dtype=torch.float64)
    v = torch.randn(batch, 4, dtype=torch.float64)
    t = torch.rand(batch, 1, dtype=torch.float64) * 0.5 + 0.5
    r = t * torch.rand(batch, 1, dtype=torch.float64)

    def u(z_, t_):  # the average velocity u = z - g, along the path: z moves with v as t moves
        return z_ - prior(s, z_, t_, r)

    h = 1e-5
    du_dt = (u(z + h * v, t + h) - u(z - h * v, t - h)) / (2 * h)
    expected = v - (t - r) * du_dt
    assert torch.allclose(prior.target(s, z, t, r, v), expected, atol=1e-7)


def test_target_is_velocity_when_r_equals_t():
    prior = make_prior()
    s, z, v = torch.randn(5, 3).double(), torch.randn(5, 4).double(), torch.randn(5, 4).double()
    t = torch.rand(5, 1).double()
    assert torch.allclose(prior.target(s, z, t, t, v), v)


def test_sampled_times_are_sorted_and_flow_fraction_has_r_equal_t():
    prior = make_prior()
    t, r, num_flow = prior.times(prior.draw_noise(1000, torch.device("cpu"))["time_normals"])
    assert num_flow == 750
    assert ((0 < r) & (r <= t) & (t < 1)).all()
    assert torch.equal(t[:num_flow], r[:num_flow])
    assert (r[num_flow:] < t[num_flow:]).float().mean() > 0.99


def test_loss_equals_the_meanflow_objective_computed_by_hand():
    """For fixed noise and times: the MeanFlow target with du/dt by central differences (not the JVP the code
    uses), rows r = t targeting v, the adaptive weight 1 / (err + c)^p, and the mean."""
    prior = make_prior()
    batch = 8
    s = torch.randn(batch, 3, dtype=torch.float64)
    actions = torch.rand(batch, 4, dtype=torch.float64) * 2 - 1
    noise = {"eps": torch.randn(batch, 4, dtype=torch.float64),
             "time_normals": torch.randn(batch, 2, dtype=torch.float64)}
    loss, metrics = prior.loss(s, actions, noise)

    times = torch.sigmoid(noise["time_normals"] * 1.0 - 0.4)
    t, r = times.max(dim=1, keepdim=True).values, times.min(dim=1, keepdim=True).values
    flow_rows = int(0.75 * batch)
    r[:flow_rows] = t[:flow_rows]
    eps = noise["eps"]
    z_t, v = (1 - t) * actions + t * eps, eps - actions
    with torch.no_grad():
        h = 1e-6
        dg = (prior(s, z_t + h * v, t + h, r) - prior(s, z_t - h * v, t - h, r)) / (2 * h)
        u_target = v - (t - r) * (v - dg)  # = v on the rows with r = t
        u = z_t - prior(s, z_t, t, r)
        err = (u - u_target).pow(2).mean(dim=-1)
        expected = ((err + 1e-3).pow(-0.5) * err).mean()
    assert torch.allclose(loss, expected, rtol=1e-6), (loss.item(), expected.item())
    assert torch.allclose(metrics["prior/mse"], err.mean(), rtol=1e-6)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters())


def test_one_step_sample_shapes_and_clipping():
    prior = make_prior().float()
    with torch.no_grad():
        for layer in prior.net.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(50)  # push raw outputs far outside [-1, 1]
    noise = sample_sphere(16, 4)
    actions = prior.sample(torch.randn(16, 3), noise)
    assert actions.shape == (16, 4)
    assert actions.abs().max() <= 1.0 and (actions.abs() == 1.0).any()


@pytest.mark.parametrize("dim", [1, 7, 25])
def test_sphere_samples_and_projection_have_norm_sqrt_d(dim):
    x = sample_sphere(100, dim, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.norm(dim=-1), torch.full((100,), math.sqrt(dim)), atol=1e-5)
    y = project_to_sphere(torch.randn(10, dim) * 1000)
    assert torch.allclose(y.norm(dim=-1), torch.full((10,), math.sqrt(dim)), atol=1e-3)
