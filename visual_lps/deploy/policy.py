"""A trained agent as a policy for a control loop: numpy observations in, action chunks in the robot's units out.

`Policy.load(run_or_checkpoint)` needs torch and the project's core only (no Accelerate, no simulator): it
restores the agent with its normalisers (action bounds, state statistics) and its observation spec, checks
every observation against that spec before it reaches a network, and returns chunks of `horizon` actions.
Evaluation (`tools/evaluate.py`, the trainer's) goes through the same object.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from visual_lps.observations import Nested, ObsSpec, map_obs


OBSERVATION_KEY = "observation"
"""the message key of a policy whose observation is one array (state tasks)"""


class ObservationError(ValueError):
    """An observation that does not fit the policy's spec; the message names the key at fault."""


class NonFiniteActionError(ValueError):
    """The network returned NaN or inf for an observation that passed the checks (values far outside the
    training data overflow float32 inside it): such a chunk must never reach a robot."""


NETWORK_DTYPE = np.float32
"""the precision the networks compute in: an observation must be finite in it, not only in its own dtype"""


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Policy:
    def __init__(self, agent: torch.nn.Module, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.agent = agent.to(self.device).eval()
        needs = agent.data_needs
        self.horizon, self.frame_stack = needs.horizon, needs.frame_stack
        self.action_dim: int = agent.action_dim
        self.obs_spec: ObsSpec = agent.obs_spec
        """the shape of one observation as the policy reads it (with the stack dimension when frame_stack > 1)"""

    @classmethod
    def load(cls, run_or_checkpoint: str | Path, device: str | torch.device = "auto") -> Policy:
        """The newest complete checkpoint of a run folder, or one checkpoint folder."""
        from visual_lps.runs.checkpoints import load_agent

        agent, *_ = load_agent(run_or_checkpoint, resolve_device(device))
        return cls(agent, device)

    def check(self, observation: Nested[np.ndarray]) -> Nested[np.ndarray]:
        """The observation as arrays, only the keys the policy reads; ObservationError naming the first key (or the
        array) whose presence, shape or dtype is wrong. Keys the policy does not read are allowed (a robot may
        send more than the policy needs)."""
        return check_observation(observation, self.obs_spec)

    @property
    def step_spec(self) -> ObsSpec:
        """The shape of one step's observation, without the stack dimension (what a robot observes at a time)."""
        if self.frame_stack == 1:
            return self.obs_spec
        return map_obs(lambda shape: tuple(shape[1:]), self.obs_spec)

    def __call__(self, observation: Nested[np.ndarray]) -> np.ndarray:
        """One observation (the last `frame_stack` stacked, if the policy stacks) -> chunk (horizon, action_dim),
        always finite: NonFiniteActionError instead of a chunk holding NaN or inf."""
        checked = self.check(observation)
        obs = map_obs(lambda array: _to_tensor(array, self.device), checked)
        chunk = self.agent.act(obs)[0].cpu().numpy()
        if not np.isfinite(chunk).all():
            raise NonFiniteActionError(f"the policy's action chunk holds NaN or inf, so none is returned: "
                                       f"{_overflow_cause(checked)}")
        return chunk


def check_observation(observation: Nested[np.ndarray], spec: ObsSpec) -> Nested[np.ndarray]:
    """`observation` as arrays of `spec` (only its keys), or ObservationError naming what is wrong (`Policy.check`)."""
    if isinstance(spec, Mapping):
        if not isinstance(observation, Mapping):
            raise ObservationError(f"expected a dict with keys {sorted(spec)}, got {type(observation).__name__}")
        missing = [key for key in spec if key not in observation]
        if missing:
            raise ObservationError(f"observation key(s) {missing} missing (have {key_names(observation)})")
        return {key: _checked_array(observation[key], shape, key) for key, shape in spec.items()}
    if isinstance(observation, Mapping):
        raise ObservationError(f"expected one array of shape {spec}, got a dict with keys {key_names(observation)}")
    return _checked_array(observation, spec, "observation")


def key_names(mapping: Mapping) -> list[str]:
    """The keys of a decoded message, sorted as text (a client may mix str and bytes keys)."""
    return sorted(str(key) for key in mapping)


def _overflow_cause(observation: Nested[np.ndarray]) -> str:
    """Why a checked observation most likely made the network overflow: the largest magnitude of each array that
    is not a camera frame (frames are bounded, 0-255)."""
    named = observation if isinstance(observation, Mapping) else {"observation": observation}
    sizes = {key: float(np.abs(array.astype(np.float64)).max(initial=0.0)) for key, array in named.items()
             if not is_camera(key, array.shape)}
    if not sizes:
        return "camera frames cannot overflow it, so the weights themselves may be damaged"
    listed = ", ".join(f"{key!r} {size:.3g}" for key, size in sizes.items())
    return f"values far outside the training data overflow float32 in the network (largest |value|: {listed})"


def is_camera(key: str, shape: tuple[int, ...]) -> bool:
    """Whether the policy reads `key` as camera frames (uint8, bounded) rather than numbers to standardise."""
    return key.endswith("_image") or (key == "observation" and len(shape) >= 3)


def _to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """One observation array as a batch of one; read-only buffers (a decoded network message) are copied."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, device=device).unsqueeze(0)


def _checked_array(value, shape: tuple[int, ...], key: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:  # ragged lists, integers beyond 64 bits
        raise ObservationError(f"observation {key!r} is not an array of numbers ({e})") from None
    if tuple(array.shape) != tuple(shape):
        raise ObservationError(f"observation {key!r} has shape {tuple(array.shape)}, the policy reads {tuple(shape)}")
    image = is_camera(key, shape)
    if image and array.dtype != np.uint8:
        raise ObservationError(f"observation {key!r} is {array.dtype}; camera frames are uint8 (0-255)")
    if not image and not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ObservationError(f"observation {key!r} is {array.dtype}; expected numbers")
    if not image:
        with np.errstate(over="ignore"):
            finite = np.isfinite(array.astype(NETWORK_DTYPE)).all()
        if not finite:
            raise ObservationError(f"observation {key!r} contains NaN or inf in float32, the network's precision "
                                   f"(finite values beyond +-3.4e38 included)")
    return array
