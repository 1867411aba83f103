"""Loading OGBench single-task data: find the file (or let ogbench download it), relabel rewards for the task.

Files are read in compact form: each observation is held once and next observations are found by index
(see `visual_lps.data.chunks`), so a 1M-transition dataset costs its raw size, not twice that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visual_lps.data.chunks import OfflineData
from visual_lps.data.node_share import NodeShare

REQUIRED_KEYS = ("observations", "actions", "terminals", "qpos")


def generate_command(dataset_name: str, dataset_dir: str | Path) -> str:
    return f"python tools/generate_ogbench.py --env {dataset_name} --episodes 1000 --out {dataset_dir}"


def find_dataset(dataset_name: str, dataset_dir: str | Path, download: bool = True) -> Path:
    """`<dataset_dir>/<dataset_name>.npz`, downloading it with ogbench where it is missing and the internet is
    reachable; otherwise an error that says which command generates it."""
    dataset_dir = Path(dataset_dir).expanduser()
    path = dataset_dir / f"{dataset_name}.npz"
    if path.exists():
        return path
    problem = "it is not there"
    if download:
        import socket

        import ogbench

        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60)  # a closed network must fail, not hang
        try:
            ogbench.download_datasets([dataset_name], str(dataset_dir))
        except OSError as e:  # URLError and socket errors: no internet here
            problem = f"downloading it failed ({e})"
        finally:
            socket.setdefaulttimeout(previous_timeout)
        if path.exists():
            return path
    raise FileNotFoundError(
        f"dataset {dataset_name!r} not found at {path}: {problem}. Generate it locally with:\n"
        f"  {generate_command(dataset_name, dataset_dir)}"
    )


def load_ogbench_task_data(
    path: str | Path, eval_env: str, sparse: bool, share: NodeShare | None = None
) -> OfflineData:
    """Read an ogbench .npz file and relabel it with the rewards and masks of the single-task environment
    `eval_env` (e.g. 'cube-single-singletask-task1-v0'). With `share`, the observations are read by the node's
    first process only and mapped by the others."""
    import gymnasium
    import ogbench.manipspace  # noqa: F401  (registers the environments)
    from ogbench.relabel_utils import relabel_dataset

    path = Path(path)
    try:
        file = np.load(path)
        if not isinstance(file, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz dataset ({e})") from e
    with file:
        missing = [k for k in REQUIRED_KEYS if k not in file]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing}; an OGBench dataset has {list(REQUIRED_KEYS)}")
        arrays = {k: file[k] for k in (*REQUIRED_KEYS, "button_states") if k in file and k != "observations"}
        if ("puzzle" in eval_env or "scene" in eval_env) and "button_states" not in arrays:
            raise ValueError(f"{path}: missing key 'button_states', needed to label {eval_env} rewards")
        if np.issubdtype(arrays["actions"].dtype, np.floating) and not np.isfinite(arrays["actions"]).all():
            raise ValueError(f"{path}: 'actions' contains NaN or inf")

        def read_observations() -> np.ndarray:
            observations = file["observations"]
            if observations.dtype != np.uint8:
                observations = observations.astype(np.float32, copy=False)
                if not np.isfinite(observations).all():
                    raise ValueError(f"{path}: 'observations' contains NaN or inf")
            return observations

        observations = share.array("observations", read_observations) if share else read_observations()

    env = gymnasium.make(eval_env)
    labels = {k: arrays[k] for k in ("qpos", "button_states") if k in arrays}
    relabel_dataset(eval_env, env, labels)
    env.close()
    rewards, masks = task_labels(labels["rewards"], sparse)
    return OfflineData(
        observations=observations,
        actions=arrays["actions"].astype(np.float32, copy=False),
        rewards=rewards,
        masks=masks,
        episode_ends=arrays["terminals"].astype(bool),
    )


def task_labels(task_rewards: np.ndarray | float, sparse: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, masks) of rows from OGBench's single-task rewards (the number of unsolved subtasks, negated; 0
    when solved), for the offline data and the online steps alike: the mask is 0 where the task is solved
    (OGBench's relabelling: 1 - all successes), sparse rewards are -1 until solved (the paper's '-sparse')."""
    task_rewards = np.asarray(task_rewards, np.float32)
    solved = task_rewards == 0
    rewards = -(~solved).astype(np.float32) if sparse else task_rewards
    return rewards, (~solved).astype(np.float32)
