"""Generate OGBench 'play' datasets locally with the scripted plan oracles that the ogbench package ships.

This follows the upstream procedure (ogbench's data_gen_scripts/generate_manipspace.py, dataset type 'play'):
`terminate_at_goal=False`, `mode='data_collection'`, fixed-length episodes (1001 steps), plan oracles with
noise 0.1 and smoothing 0.5, a new target whenever the oracle finishes, a per-episode stacking probability,
a validation file with a tenth of the episodes, and re-collection of scene's unhealthy episodes. The files
have the schema ogbench itself loads, so generated and downloaded datasets are interchangeable.

Each episode gets its own seed (from one SeedSequence), so the output does not depend on the worker count.
"""

from __future__ import annotations

import multiprocessing as mp
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from visual_lps.files import atomic_write

FAMILIES = ("cube-single", "cube-double", "scene", "puzzle-3x3", "puzzle-4x4")
DATASET_NAMES = tuple(f"{prefix}{family}-play-v0" for prefix in ("", "visual-") for family in FAMILIES)


def env_name_for(dataset_name: str) -> str:
    """'cube-single-play-v0' -> 'cube-single-v0' (the goal-conditioned env used for collection)."""
    if dataset_name not in DATASET_NAMES:
        raise ValueError(f"unknown OGBench dataset {dataset_name!r}; supported: {', '.join(DATASET_NAMES)}")
    return re.sub(r"-play-v0$", "-v0", dataset_name)


def _stack_probability(env_name: str) -> float:
    """Upstream's per-episode probability of stacking the target block on another one."""
    if "single" in env_name:
        return 0.0
    if "double" in env_name:
        return float(np.random.uniform(0.0, 0.25))
    return 0.5


def _make_oracles(env, env_name: str, noise: float, noise_smoothing: float) -> dict:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    kwargs = dict(env=env, noise=noise, noise_smoothing=noise_smoothing)
    if "cube" in env_name:
        return {"cube": CubePlanOracle(**kwargs)}
    if "scene" in env_name:
        return {
            "cube": CubePlanOracle(**kwargs),
            "button": ButtonPlanOracle(**kwargs),
            "drawer": DrawerPlanOracle(**kwargs),
            "window": WindowPlanOracle(**kwargs),
        }
    return {"button": ButtonPlanOracle(**kwargs, gripper_always_closed=True)}


def _scene_is_healthy(qpos: np.ndarray) -> bool:
    """Upstream's check: the cube stays visible (not too far right, nor far left unless in the drawer)."""
    block = qpos[:, 14:17]
    if (block[:, 1] >= 0.29).any():
        return False
    return not ((block[:, 1] <= -0.3) & ((block[:, 2] < 0.06) | (block[:, 2] > 0.08))).any()


class EpisodeCollector:
    """One environment and its oracles; collects whole episodes from a seed."""

    def __init__(self, env_name: str, max_episode_steps: int, noise: float, noise_smoothing: float):
        import gymnasium
        import ogbench.manipspace  # noqa: F401  (registers the environments)

        self.env_name = env_name
        self.env = gymnasium.make(
            env_name, terminate_at_goal=False, mode="data_collection", max_episode_steps=max_episode_steps
        )
        self.oracles = _make_oracles(self.env, env_name, noise, noise_smoothing)
        self.has_button_states = hasattr(self.env.unwrapped, "_cur_button_states")

    def collect(self, seed: int) -> dict[str, np.ndarray]:
        np.random.seed(seed)  # the oracles draw from numpy's global generator
        env_seed = seed
        while True:
            episode = self._collect_once(env_seed)
            if "scene" not in self.env_name or _scene_is_healthy(episode["qpos"]):
                return episode
            env_seed = int(np.random.randint(2**31 - 1))  # re-collect the unhealthy episode

    def _collect_once(self, env_seed: int) -> dict[str, np.ndarray]:
        ob, info = self.env.reset(seed=env_seed)
        p_stack = _stack_probability(self.env_name)
        agent = self.oracles[info["privileged/target_task"]]
        agent.reset(ob, info)
        keys = ["observations", "actions", "terminals", "qpos", "qvel"]
        if self.has_button_states:
            keys.append("button_states")
        rows: dict[str, list] = {k: [] for k in keys}
        done = False
        while not done:
            action = np.clip(np.asarray(agent.select_action(ob, info)), -1, 1)
            next_ob, _, terminated, truncated, info = self.env.step(action)
            done = terminated or truncated
            if agent.done:
                agent_ob, agent_info = self.env.unwrapped.set_new_target(p_stack=p_stack)
                agent = self.oracles[agent_info["privileged/target_task"]]
                agent.reset(agent_ob, agent_info)
            rows["observations"].append(ob)
            rows["actions"].append(action)
            rows["terminals"].append(done)
            rows["qpos"].append(info["prev_qpos"])
            rows["qvel"].append(info["prev_qvel"])
            if self.has_button_states:
                rows["button_states"].append(info["prev_button_states"])
            ob = next_ob
        return {k: _as_upstream_dtype(k, v) for k, v in rows.items()}


def _as_upstream_dtype(key: str, values: list) -> np.ndarray:
    array = np.asarray(values)
    if key == "observations" and array.dtype == np.uint8:
        return array
    if key == "terminals":
        return array.astype(bool)
    if key == "button_states":
        return array.astype(np.int64)
    return array.astype(np.float32)


_worker: EpisodeCollector | None = None


def _init_worker(*args) -> None:
    global _worker
    _worker = EpisodeCollector(*args)


def _collect_in_worker(seed: int) -> dict[str, np.ndarray]:
    assert _worker is not None
    return _worker.collect(seed)


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, atomically: no half-written dataset."""
    with atomic_write(path) as written, open(written, "wb") as f:
        np.savez_compressed(f, **arrays)


def generate(
    dataset_name: str,
    out_dir: str | Path,
    episodes: int,
    seed: int = 0,
    workers: int = 1,
    max_episode_steps: int = 1001,
    noise: float = 0.1,
    noise_smoothing: float = 0.5,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write `<out_dir>/<dataset_name>.npz` (`episodes` episodes) and `-val.npz` (a tenth of that, at least 1)."""
    env_name = env_name_for(dataset_name)
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}")
    num_val = max(1, episodes // 10)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(episodes + num_val)]
    args = (env_name, max_episode_steps, noise, noise_smoothing)
    bar = tqdm(total=len(seeds), desc=f"generating {dataset_name}", unit="ep", disable=not progress)
    # Episodes have a fixed length (no termination at the goal), so the outputs are allocated once and
    # filled in place: peak memory stays near the raw size (12 GB for 1M 64x64 frames), never twice it.
    arrays: dict[str, dict[str, np.ndarray]] = {}
    if workers <= 1:
        collector = EpisodeCollector(*args)
        episode_stream = map(collector.collect, seeds)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=args)
        episode_stream = pool.imap(_collect_in_worker, seeds)
    try:
        for k, episode in enumerate(episode_stream):
            split, first = ("train", 0) if k < episodes else ("val", episodes)
            if split not in arrays:
                count = episodes if split == "train" else num_val
                arrays[split] = {key: np.empty((count * max_episode_steps, *v.shape[1:]), v.dtype)
                                 for key, v in episode.items()}
            rows = slice((k - first) * max_episode_steps, (k - first + 1) * max_episode_steps)
            for key, values in episode.items():
                arrays[split][key][rows] = values
            bar.update()
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path = out_dir / f"{dataset_name}.npz"
    val_path = out_dir / f"{dataset_name}-val.npz"
    save_npz_atomic(train_path, arrays.pop("train"))
    save_npz_atomic(val_path, arrays.pop("val"))
    return train_path, val_path
