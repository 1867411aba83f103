"""Observations are one array (state OGBench, one camera) or a dict of named arrays (robot data: one
`<camera>_image` per camera plus proprioception keys, as in robomimic). These helpers let the sampler, the
encoder and the evaluation treat both alike.

A *spec* is the per-row shape: a tuple for one array, a dict of tuples for named arrays. With frame
stacking every shape gains a leading stack dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar, Union

import numpy as np

T = TypeVar("T")
U = TypeVar("U")
Nested = Union[T, Mapping[str, T]]
ObsSpec = Union[tuple[int, ...], dict[str, tuple[int, ...]]]

IMAGE_SUFFIX = "_image"


def map_obs(fn: Callable[[T], U], obs: Nested[T]) -> Nested[U]:
    """`fn` applied to one array or to every array of a dict (keys kept in order)."""
    if isinstance(obs, Mapping):
        return {key: fn(value) for key, value in obs.items()}
    return fn(obs)


def obs_spec(observations: Nested[np.ndarray], frame_stack: int = 1) -> ObsSpec:
    """Per-row shapes of stored observations (rows first), with the stack dimension when frame_stack > 1."""

    def shape(array: np.ndarray) -> tuple[int, ...]:
        row = tuple(int(n) for n in array.shape[1:])
        return (frame_stack, *row) if frame_stack > 1 else row

    return map_obs(shape, observations)


def spec_to_yaml(spec: ObsSpec) -> list[int] | dict[str, list[int]]:
    return map_obs(list, spec)


def spec_from_yaml(value: list[int] | dict[str, list[int]]) -> ObsSpec:
    return map_obs(tuple, value)


def num_rows(observations: Nested[np.ndarray]) -> int:
    """Row count; every array of a dict must have the same one."""
    if not isinstance(observations, Mapping):
        return len(observations)
    lengths = {key: len(value) for key, value in observations.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"observation arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


def is_image_key(key: str) -> bool:
    return key.endswith(IMAGE_SUFFIX)
