import gymnasium
import mujoco
import numpy as np
import pytest
import torch

from visual_lps.data.chunks import DataNeeds, OfflineData
from visual_lps.data.ogbench_data import task_labels
from visual_lps.data.replay import ReplayBuffer
from visual_lps.envs.ogbench_env import OGBenchOnlineEnvironment
from visual_lps.envs.online import EnvironmentFailure, OnlineActor, OnlineEnvironment

ENV = "cube-single-singletask-task1-v0"


def put_cube_on_target(env: gymnasium.Env) -> None:
    inner = env.unwrapped
    joint = inner._data.joint("object_joint_0")
    joint.qpos[:3] = inner._data.mocap_pos[inner._cube_target_mocap_ids[0]]
    joint.qvel[:] = 0.0
    mujoco.mj_forward(inner._model, inner._data)


@pytest.mark.parametrize("sparse", [False, True])
def test_online_steps_are_labelled_as_ogbench_labels_the_play_data(sparse: bool):
    """The rows' rewards and masks equal OGBench's relabelling of the same states (the offline data's labels): one
    reward function offline and online. The cube is put on its target mid-episode, so the episode succeeds."""
    from ogbench.relabel_utils import relabel_dataset

    env = OGBenchOnlineEnvironment(ENV, sparse, max_episode_steps=30)
    env.reset(seed=5)
    qpos = [env.env.unwrapped._data.qpos.copy()]  # each state as a step (or the reset) left it
    rewards, masks, transition = [], [], None
    for t in range(30):
        if t == 6:
            put_cube_on_target(env.env)  # as if the sixth action had done it
        transition = env.step(np.zeros(5, np.float32))
        qpos.append(env.env.unwrapped._data.qpos.copy())
        rewards.append(transition.reward)
        masks.append(transition.mask)
        if transition.done:
            break
    assert transition.done and transition.success and len(rewards) < 30  # terminated on success
    labels = {"qpos": np.stack(qpos[:-1])}  # the states the actions were taken in
    relabel_dataset(ENV, gymnasium.make(ENV), labels)
    want_rewards, want_masks = task_labels(labels["rewards"], sparse)
    assert rewards == want_rewards.tolist() and masks == want_masks.tolist()
    assert masks[-1] == 0.0  # the step taken on the solved state is terminal, as in the play data
    assert env.final_labels() == (0.0, 1.0)  # the final (solved) observation closes the episode, starting no chunk


class CountingEnv(gymnasium.Env):
    """Observation (step, episode seed); ends after `length` steps; raises at step `fail_at`."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, length: int, fail_at: int | None = None):
        self.length, self.fail_at = length, fail_at

    def reset(self, *, seed=None, options=None):
        self.t, self.seed_ = 0, seed
        return np.array([0, seed], np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t == self.fail_at:
            raise RuntimeError("MuJoCo went unstable")
        return np.array([self.t, self.seed_], np.float32), 0.0, False, self.t == self.length, {"success": False}


def offline_rows(n: int = 8) -> OfflineData:
    return OfflineData(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.float32), np.zeros(n, np.float32),
                       np.ones(n, np.float32), np.arange(n) == n - 1)


def test_the_policy_sees_the_frame_stacks_the_sampler_builds_from_the_stored_rows():
    needs = DataNeeds(horizon=2, frame_stack=3)
    buffer = ReplayBuffer(offline_rows(), needs, "cpu", seed=0)
    seen = []

    def policy(stack: np.ndarray) -> np.ndarray:
        seen.append(stack.copy())
        return np.full((2, 1), len(seen), np.float32)

    actor = OnlineActor(OnlineEnvironment(CountingEnv(5), 5), policy, 3, buffer, seed=40)
    finished = [actor.step() for _ in range(5)]
    assert finished[:4] == [None] * 4 and finished[4].length == 5 and finished[4].seed == 40
    rows = torch.arange(8, 8 + 5, 2)  # the steps at which a chunk was asked for: 0, 2, 4
    assert len(seen) == 3
    assert torch.equal(buffer.stacked_observations(rows), torch.from_numpy(np.stack(seen)))
    assert buffer.actions[8:13, 0].tolist() == [1, 1, 2, 2, 3]  # chunks executed open loop, stored as executed
    episode = finished[4].rows
    assert episode.observations[:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # 5 steps and the final observation
    assert actor.step() is None and buffer.observations[14, 1].item() == 41  # the next episode: the next seed


def test_exploration_noise_stays_in_the_action_range_and_is_the_same_after_a_restart():
    def run() -> np.ndarray:
        buffer = ReplayBuffer(offline_rows(), DataNeeds(1), "cpu", seed=0)
        actor = OnlineActor(OnlineEnvironment(CountingEnv(50), 50), lambda obs: np.full((1, 1), 0.9, np.float32), 1,
                            buffer, seed=7, explore_noise=0.5, action_bounds=(np.array([-1.0]), np.array([1.0])))
        for _ in range(50):
            actor.step()
        return buffer.actions[8:58, 0].numpy()

    actions = run()
    assert actions.max() <= 1.0 and actions.min() >= -1.0 and (actions == 1.0).any() and actions.std() > 0.1
    assert np.array_equal(actions, run())


def test_an_environment_that_raises_names_the_episode_and_step():
    buffer = ReplayBuffer(offline_rows(), DataNeeds(1), "cpu", seed=0)
    actor = OnlineActor(OnlineEnvironment(CountingEnv(10, fail_at=3), 10), lambda obs: np.zeros((1, 1), np.float32), 1,
                        buffer, seed=0)
    actor.step(), actor.step()
    with pytest.raises(EnvironmentFailure, match=r"raised at step 3 of online episode 0 \(RuntimeError: MuJoCo"):
        actor.step()
