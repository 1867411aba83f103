"""The training update (visual_lps.training.update): one graph without breaks, the same numbers compiled and eager,
Adam as torch.optim.Adam, metric means and non-finite values named with their first step."""

from __future__ import annotations

import re

import pytest
import torch

from tests.agents.test_lps import SMALL
from visual_lps.agents.lps import LPSAgent, LPSConfig
from visual_lps.training.update import UpdateStep

B = 8
KINDS = {
    "state": (dict(), (3,)),
    "visual": (dict(encoder="impala_small", frame_stack=2, augment_prob=0.5), (2, 16, 16, 3)),
    "cameras+proprioception": (dict(encoder="impala_small", frame_stack=2, augment_prob=0.5),
                               {"wrist_image": (2, 16, 16, 3), "front_image": (2, 12, 20, 3), "joints": (2, 4)}),
}


def make(kind: str) -> LPSAgent:
    overrides, spec = KINDS[kind]
    torch.manual_seed(0)
    return LPSAgent(LPSConfig(horizon=2, **SMALL, **overrides), obs_spec=spec, action_dim=2)


def observations(spec, generator: torch.Generator):
    if isinstance(spec, dict):
        return {key: observations(shape, generator) for key, shape in spec.items()}
    if len(spec) > 2:
        return torch.randint(0, 256, (B, *spec), dtype=torch.uint8, generator=generator)
    return torch.randn(B, *spec, generator=generator)


def batches(agent: LPSAgent, count: int, seed: int = 0) -> list[dict]:
    """Fresh batches, random inputs included, as the sampler would draw them."""
    generator = torch.Generator().manual_seed(seed)
    return [{
        "observations": observations(agent.obs_spec, generator),
        "next_observations": observations(agent.obs_spec, generator),
        "actions": torch.rand(B, 2, 2, generator=generator) * 2 - 1,
        "rewards": -torch.rand(B, 2, generator=generator),
        "masks": torch.ones(B, 2),
        "random": agent.draw_random_inputs(B, torch.device("cpu"), generator),
    } for _ in range(count)]


def adam(agent: LPSAgent) -> torch.optim.Adam:
    return torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=1e-3)


class CountingBackend:
    """A dynamo backend that runs the traced graphs eagerly and counts them: one per compilation."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return graph_module.forward


@pytest.mark.parametrize("kind", list(KINDS))
def test_update_compiles_as_one_graph_without_recompiling_and_matches_eager(kind: str):
    """fullgraph=True fails on any graph break; the backend counts compilations after warm-up."""
    torch._dynamo.reset()
    eager_agent, compiled_agent = make(kind), make(kind)
    data = batches(eager_agent, 5)
    backend = CountingBackend()
    eager = UpdateStep(eager_agent, adam(eager_agent))
    compiled = UpdateStep(compiled_agent, adam(compiled_agent), compile=True, backend=backend)
    for batch in data:
        eager(batch)
        compiled(batch)
    assert backend.graphs == 1, f"{backend.graphs} graphs: the update recompiled or broke into pieces"
    for (name, a), b in zip(eager_agent.state_dict().items(), compiled_agent.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs between eager and compiled updates"
    assert eager.metrics() == compiled.metrics()


def test_adam_matches_torch_optim_adam():
    reference, ours = make("state"), make("state")
    optimizer = adam(reference)
    update = UpdateStep(ours, adam(ours))
    for batch in batches(reference, 4):
        loss, _ = reference(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        reference.update_targets()
        update(batch)
    for (name, a), b in zip(reference.state_dict().items(), ours.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    assert update.optimizer.state_dict()["state"][0]["step"].item() == 4  # checkpointed like torch's Adam


def test_metrics_are_means_since_the_last_read():
    agent = make("state")
    update = UpdateStep(agent, adam(agent))
    losses = []
    for batch in batches(agent, 3):
        with torch.no_grad():
            losses.append(agent(batch)[1]["critic/loss"].item())
        update(batch)
    metrics = update.metrics()
    assert metrics["critic/loss"] == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert {"prior/loss", "actor/loss", "train/grad_norm"} <= set(metrics)
    update(batches(agent, 1, seed=1)[0])
    assert update.metrics()["critic/loss"] != pytest.approx(sum(losses) / 3, rel=1e-5)


def test_non_finite_values_are_named_with_the_first_step_they_went_bad():
    agent = make("state")
    update = UpdateStep(agent, adam(agent), first_step=10)
    data = batches(agent, 3)
    data[1]["rewards"][0, 0] = float("nan")  # step 12: the critic loss and every gradient
    for batch in data:
        update(batch)
    with pytest.raises(FloatingPointError, match="non-finite critic/loss at step 12.*train/grad_norm at step 12"):
        update.check_finite()


def test_fp16_is_refused_with_the_reason():
    agent = make("state")
    with pytest.raises(ValueError, match="fp16.*loss scaling"):
        UpdateStep(agent, adam(agent), mixed_precision="fp16")



def failing_backend(graph_module: torch.fx.GraphModule, example_inputs):
    """A compiler that refuses every graph, as one might on a machine or torch version we never met."""
    raise RuntimeError("this backend refuses every graph")


def test_a_failed_compilation_says_why_once_and_the_run_goes_on_eagerly_with_the_same_numbers(capsys):
    torch._dynamo.reset()
    eager_agent, fallback_agent = make("state"), make("state")
    eager = UpdateStep(eager_agent, adam(eager_agent))
    fallback = UpdateStep(fallback_agent, adam(fallback_agent), compile=True, backend=failing_backend)
    for batch in batches(eager_agent, 4):
        eager(batch)
        fallback(batch)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "compiling the update failed" in said[0] and "refuses every graph" in said[0]
    assert "--no-compile" in said[0] and "eagerly" in said[0]
    assert fallback.describe().startswith("eager (compiling failed: ")
    for (name, a), b in zip(eager_agent.state_dict().items(), fallback_agent.state_dict().values()):
        assert torch.equal(a, b), f"{name}: the failed call was not applied exactly once"
    assert eager.metrics() == fallback.metrics()


def test_a_compiled_update_says_how_long_compiling_took(capsys):
    torch._dynamo.reset()
    agent = make("state")
    update = UpdateStep(agent, adam(agent), compile=True, backend=CountingBackend())
    for batch in batches(agent, 3):
        update(batch)
    assert re.fullmatch(r"the update compiled in \d+\.\d s", capsys.readouterr().err.strip())
