"""An exported policy runs with torch alone and returns the Policy's chunks (state, visual, cameras + proprio)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.deploy.test_policy import observation
from visual_lps.agents import AGENTS
from visual_lps.deploy.export import export_policy
from visual_lps.deploy.policy import Policy

KINDS = {
    "state": (dict(), (6,)),
    "visual": (dict(encoder="impala_small", frame_stack=2), (2, 16, 16, 3)),
}


@pytest.mark.parametrize("agent_name", ["lps", "dsrl"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_exported_chunks_equal_the_policys(kind: str, agent_name: str, tmp_path: Path):
    overrides, spec = KINDS[kind]
    config_cls, agent_cls = AGENTS[agent_name].config, AGENTS[agent_name].agent
    torch.manual_seed(0)
    agent = agent_cls(config_cls(horizon=3, **overrides), spec, action_dim=2)
    agent.set_action_bounds(torch.tensor([-3.0, 0.0]), torch.tensor([5.0, 0.5]))
    policy = Policy(agent, "cpu")
    rng = np.random.default_rng(1)
    obs = (rng.integers(0, 256, spec, dtype=np.uint8) if len(spec) >= 3 else rng.normal(size=spec).astype(np.float32))
    program = torch.export.load(export_policy(agent, tmp_path / "policy.pt2")).module()
    exported = program(torch.from_numpy(obs).unsqueeze(0))
    assert exported.shape == (1, 3, 2)
    assert np.allclose(exported[0].detach().numpy(), policy(obs), atol=1e-5)


def test_the_tool_exports_a_robot_run_that_torch_alone_can_run(robot_run: Path, tmp_path: Path):
    out = tmp_path / "policy.pt2"
    result = subprocess.run([sys.executable, "tools/export_policy.py", str(robot_run), str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    obs = observation()
    expected = Policy.load(robot_run, device="cpu")(obs)
    np.savez(tmp_path / "obs.npz", **obs)
    script = f"""
import sys, numpy as np, torch
program = torch.export.load({str(out)!r}).module()
obs = {{k: torch.from_numpy(v).unsqueeze(0) for k, v in np.load({str(tmp_path / 'obs.npz')!r}).items()}}
np.save({str(tmp_path / 'chunk.npy')!r}, program(obs)[0].detach().numpy())
print([m for m in ("visual_lps", "timm", "kornia") if m in sys.modules])
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"  # torch alone
    assert np.allclose(np.load(tmp_path / "chunk.npy"), expected, atol=1e-5)

    again = subprocess.run([sys.executable, "tools/export_policy.py", str(robot_run), str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "give --overwrite" in again.stderr
    wrong = subprocess.run([sys.executable, "tools/export_policy.py", str(robot_run), str(tmp_path / "p.onnx")],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "name it .pt2" in wrong.stderr


def test_a_compiled_export_runs_the_same_chunks(tmp_path: Path):
    """AOTInductor (a C++ compile: the one slow export test)."""
    torch.manual_seed(0)
    config_cls, agent_cls = AGENTS["lps"].config, AGENTS["lps"].agent
    agent = agent_cls(config_cls(horizon=3, prior_hidden_dims=(32,), critic_hidden_dims=(32,),
                                 actor_hidden_dims=(32,)), (6,), action_dim=2)
    package = torch._inductor.aoti_load_package(str(export_policy(agent, tmp_path / "c.pt2", compiled=True)))
    obs = torch.randn(1, 6)
    with torch.inference_mode():
        assert torch.allclose(package(obs), agent.act(obs), atol=1e-5)
