"""The robot's reports to a fine-tuning server (visual_lps.deploy.episode_recorder, through PolicyServer.reply):
what a robot reports is stored as it sent it, a bad report is named and changes nothing, a client that leaves
mid-episode leaves an incomplete episode, and a plain server refuses reports."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.deploy.test_policy import observation
from visual_lps.data.robot_episodes import RobotEpisodeStore
from visual_lps.deploy.episode_recorder import REPORT_KEY, EpisodeRecorder
from visual_lps.deploy.policy import Policy
from visual_lps.deploy.serving import PolicyServer, pack, unpack
from visual_lps.deploy.swappable import SwappablePolicy


@pytest.fixture
def server(robot_run: Path, tmp_path: Path) -> tuple[PolicyServer, list]:
    policy = Policy.load(robot_run, device="cpu")
    stored = []
    recorder = EpisodeRecorder(RobotEpisodeStore(tmp_path, "sparse"), policy.step_spec, policy.action_dim,
                               stored.append, max_episode_steps=5)
    return PolicyServer(SwappablePolicy(policy, version=7), {}, recorder=recorder), stored


def ask(server: PolicyServer, message: dict, client: int = 1):
    reply = server.reply(pack(message), client)
    return reply if isinstance(reply, str) else unpack(reply)


def step(action=None, **fields) -> dict:
    return {REPORT_KEY: "step", "observation": observation(), "action": np.zeros(4, np.float32) if action is None
            else action, "policy_version": 7} | fields


def test_a_reported_episode_is_stored_as_sent_with_the_version_of_each_chunk(server, tmp_path: Path):
    served, stored = server
    reply = ask(served, observation())
    assert reply["policy_version"] == 7 and reply["actions"].shape == (5, 4)
    actions = [reply["actions"][0], np.full(4, 0.5, np.float32)]
    assert ask(served, step(actions[0])) == {"episode_steps": 1}
    assert ask(served, step(actions[1], intervention=True)) == {"episode_steps": 2}
    receipt = ask(served, {REPORT_KEY: "end", "label": "success", "final_observation": observation()})
    assert receipt == {"episode": 0, "label": "success", "steps": 2, "trained_on": True}
    assert [s.index for s in stored] == [0]
    with h5py.File(tmp_path / "robot_episodes.hdf5", "r") as file:
        demo = file["data/demo_0"]
        assert np.array_equal(demo["actions"][:2], np.stack(actions))
        assert demo["interventions"][:].tolist() == [False, True, False]
        assert demo["policy_versions"][:].tolist() == [7, -1, -1]
        assert np.array_equal(demo["obs/joints"][0], observation()["joints"])
        assert np.array_equal(demo["obs/front_image"][2], observation()["front_image"])


@pytest.mark.parametrize("message, named", [
    ({REPORT_KEY: "reset"}, "'lps_report' is 'reset'"),
    (step(np.zeros(3, np.float32)), "'action' has shape (3,)"),
    (step(np.array([0, np.nan, 0, 0], np.float32)), "'action' contains NaN or inf"),
    (step(intervention=1), "'intervention' is int: expected bool"),
    (step(policy_version="7"), "'policy_version' is str"),
    (step(reward=float("inf")), "'reward' is NaN or inf"),
    (step(observation={"joints": np.zeros(7, np.float32)}), "'observation': observation key(s) ['front_image'"),
    ({REPORT_KEY: "end", "label": "great"}, "'label' is 'great'"),
    ({REPORT_KEY: "end", "label": "failure"}, "no step was reported in this episode"),
])
def test_a_bad_report_is_named_and_changes_nothing(server, tmp_path: Path, message: dict, named: str):
    served, stored = server
    reply = ask(served, message)
    assert isinstance(reply, str) and reply.startswith("bad report:") and named in reply, reply
    assert not served.recorder.episodes and not stored and not (tmp_path / "robot").exists()


def test_episodes_are_bounded_and_a_client_that_leaves_mid_episode_leaves_it_incomplete(server, tmp_path: Path):
    served, stored = server
    for _ in range(5):
        ask(served, step(), client=2)
    assert "already has 5 steps" in ask(served, step(), client=2)
    ask(served, step(), client=3)  # another connection, its own episode
    served.disconnected(2)
    assert [(s.index, s.label, s.steps, s.trained_on) for s in stored] == [(0, "incomplete", 5, False)]
    assert 3 in served.recorder.episodes
    served.disconnected(4)  # a client that never reported: nothing to store
    assert len(stored) == 1
    for client in range(10, 17):
        ask(served, step(), client=client)
    assert "8 episodes are in progress already" in ask(served, step(), client=17)


def test_source_rewards_must_come_with_every_step_and_a_plain_server_takes_no_reports(robot_run: Path,
                                                                                       tmp_path: Path):
    policy = Policy.load(robot_run, device="cpu")
    recorder = EpisodeRecorder(RobotEpisodeStore(tmp_path, "source"), policy.step_spec, policy.action_dim)
    served = PolicyServer(SwappablePolicy(policy), {}, recorder=recorder)
    assert "'reward' missing" in ask(served, step())
    assert ask(served, step(reward=1.5)) == {"episode_steps": 1}
    plain = PolicyServer(policy, {})
    assert "takes no reports" in ask(plain, step())
    assert "policy_version" not in ask(plain, observation())


def test_a_swap_never_makes_a_request_wait_and_each_chunk_names_its_weights(robot_run: Path):
    policy = Policy.load(robot_run, device="cpu")
    served = SwappablePolicy(policy, version=3)
    before, version = served(observation())
    assert version == 3
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in policy.agent.state_dict().items()}
    served.load(weights, 9)
    after, version = served(observation())
    assert version == 9 and not np.allclose(before, after)
    with served.locks[served.current]:  # a load holding the serving copy: the request takes the other one
        _, version = served(observation())
    assert version == 3
    with served.locks[1 - served.current]:  # a load into the standby copy: the serving one answers
        _, version = served(observation())
    assert version == 9
