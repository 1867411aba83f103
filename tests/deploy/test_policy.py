"""Policy: loads a run with torch and the core alone, checks every observation against the spec, and returns
chunks in the robot's units (the agent's act())."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from visual_lps.deploy.policy import NonFiniteActionError, ObservationError, Policy


def observation() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"front_image": rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
            "joints": rng.normal(size=7).astype(np.float32)}


def test_loads_without_accelerate_or_a_simulator_and_acts_in_robot_units(robot_run: Path):
    script = f"""
import sys, numpy as np
from visual_lps.deploy.policy import Policy
policy = Policy.load({str(robot_run)!r}, device="cpu")
rng = np.random.default_rng(0)
chunk = policy({{"front_image": rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
                 "wrist_image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                 "joints": rng.normal(size=7).astype(np.float32)}})
print(chunk.shape, [m for m in ("accelerate", "ogbench", "mujoco", "gymnasium", "tensorboard") if m in sys.modules])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[0] == "(5, 4) []"


def test_chunks_are_the_agents_in_the_datas_units(robot_run: Path):
    policy = Policy.load(robot_run, device="cpu")
    obs = observation()
    chunk = policy(obs | {"prompt": "unused keys are allowed"})
    expected = policy.agent.act({k: torch.as_tensor(v).unsqueeze(0) for k, v in obs.items()})[0].numpy()
    assert chunk.shape == (policy.horizon, policy.action_dim) == (5, 4)
    assert np.allclose(chunk, expected)
    low, high = policy.agent.action_low.numpy(), policy.agent.action_high.numpy()
    assert low.min() < -1.5 and high.max() > 2.5  # the data's actions span [-2, 3]: the chunk is in those units


@pytest.mark.parametrize("change, message", [
    (lambda o: o.pop("wrist_image"), "observation key(s) ['wrist_image'] missing"),
    (lambda o: o.update(front_image=np.zeros((16, 12, 3), np.uint8)), "'front_image' has shape (16, 12, 3), the policy reads (12, 16, 3)"),
    (lambda o: o.update(front_image=np.zeros((12, 16, 3), np.float32)), "'front_image' is float32; camera frames are uint8"),
    (lambda o: o.update(joints=np.full(7, np.nan, np.float32)), "'joints' contains NaN or inf"),
    (lambda o: o.update(joints=np.array(["a"] * 7)), "'joints' is <U1; expected numbers"),
])
def test_a_bad_observation_is_refused_naming_the_key(robot_run: Path, change, message: str):
    policy = Policy.load(robot_run, device="cpu")
    obs = observation()
    change(obs)
    with pytest.raises(ObservationError) as error:
        policy(obs)
    assert message in str(error.value)
    with pytest.raises(ObservationError, match="expected a dict"):
        policy(np.zeros(3))


def test_values_beyond_float32_are_refused_and_a_non_finite_chunk_is_never_returned(robot_run: Path):
    policy = Policy.load(robot_run, device="cpu")
    with pytest.raises(ObservationError, match="'joints' contains NaN or inf in float32"):
        policy(observation() | {"joints": np.full(7, 1e39)})  # finite as float64, inf in the network
    with pytest.raises(NonFiniteActionError) as error:
        policy(observation() | {"joints": np.full(7, 3e38, np.float32)})  # finite, overflows once standardised
    assert "values far outside the training data overflow float32 in the network" in str(error.value)
    assert "'joints' 3e+38" in str(error.value)
    assert np.isfinite(policy(observation())).all()


def test_load_reads_no_pickle(robot_run: Path, monkeypatch: pytest.MonkeyPatch):
    """A checkpoint's .pkl files (Accelerate's sampler and random states) can run code when unpickled: serving
    reads the weights (safetensors) and the YAML files only."""

    def refuse(*args, **kwargs):
        raise AssertionError("Policy.load unpickled something")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)
    assert Policy.load(robot_run, device="cpu")(observation()).shape == (5, 4)
