"""tools/finetune_robot.py end to end through real websockets: a simulated robot (an OGBench cube-single state
environment whose success is the operator's label) fine-tunes a tiny LPS run; the stored episodes are exactly what
the robot sent, the served weights move on, a plain openpi client still gets actions, a robot that disconnects
and a server killed mid-run lose nothing stored, and a restarted learner resumes with all of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO
from tests.training.test_online import scalars
from visual_lps.cli.finetune_robot import main
from visual_lps.data.robot_hdf5 import validate_hdf5
from visual_lps.deploy.policy import Policy
from visual_lps.deploy.serving import OBSERVATION_KEY, PolicyClient, RobotClient
from visual_lps.envs.simulated_robot import SimulatedRobot
from visual_lps.runs.checkpoints import latest_checkpoint
from visual_lps.training.flags import parse_args
from visual_lps.training.trainer import train

ENV = "cube-single-singletask-task1-v0"
EPISODE_STEPS = 20


@pytest.fixture(scope="module")
def cube_run(tiny_cube_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LPS run of 4 updates on the tiny cube-single data."""
    out = tmp_path_factory.mktemp("finetune") / "run"
    train(*parse_args(["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out),
                       "--prior-hidden-dims", "32,32", "--critic-hidden-dims", "32,32", "--actor-hidden-dims", "32",
                       "--batch-size", "16", "--no-progress", "--no-compile", "--steps", "4", "--eval-episodes",
                       "0", "--save-every", "4", "--log-every", "2"]))
    return out


def start(*flags: str, log: Path) -> tuple[subprocess.Popen, int]:
    """A fine-tuning server (with its learner) on loopback, and its port, once it serves."""
    env = {k: v for k, v in os.environ.items() if k != "VISUAL_LPS_TOKEN"}
    process = subprocess.Popen([sys.executable, "tools/finetune_robot.py", "--port", "0", "--device", "cpu",
                                "--learner-threads", "1", *flags], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=log.open("w"), text=True, env=env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        match = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
        if match:
            process.started = "".join(lines)  # what it printed until it served
            return process, int(match.group(1))
    raise AssertionError("".join(lines) + log.read_text())


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> str:
    process.send_signal(signum)
    out, _ = process.communicate(timeout=120)
    return out


def children(pid: int) -> list[int]:
    """The learner process of a server (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_for_version(client: RobotClient, version: int, timeout: float = 120.0) -> int:
    """Ask until the served weights are at least `version` (the learner owes utd updates per step received)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        served = client.infer({OBSERVATION_KEY: np.zeros(28, np.float32)})["policy_version"]
        if served >= version:
            return served
        time.sleep(0.1)
    raise AssertionError(f"the served weights stayed at version {served}, below {version}")


def test_robot_episodes_flow_back_into_training_and_nothing_stored_is_ever_lost(cube_run: Path, tmp_path: Path):
    out, log = tmp_path / "ft", tmp_path / "server.log"
    process, port = start("--checkpoint", str(cube_run), "--out", str(out), "--rewards", "source", "--utd", "2",
                          "--publish-every", "1", "--save-every", "30", log=log)
    probe = {OBSERVATION_KEY: np.linspace(-1, 1, 28).astype(np.float32)}
    try:
        client = RobotClient(port=port)
        assert client.metadata["fine_tuning"] and client.metadata["reward_scheme"] == "source"
        first = client.infer(probe)
        assert first["policy_version"] == 4  # the run's last update
        robot = SimulatedRobot(client, ENV, max_episode_steps=EPISODE_STEPS)
        logs = [robot.run_episode(0)]
        wait_for_version(client, 4 + 2 * EPISODE_STEPS)
        logs.append(robot.run_episode(1))
        helped = SimulatedRobot(client, ENV, max_episode_steps=EPISODE_STEPS, patience=8)  # a human takes over
        logs.append(helped.run_episode(2))
        later = wait_for_version(client, 4 + 2 * 3 * EPISODE_STEPS)
        second = client.infer(probe)
        assert second["policy_version"] == later and not np.allclose(first["actions"], second["actions"])
        assert min(logs[1].versions) > max(logs[0].versions) == 4  # each chunk names the weights that chose it
        with PolicyClient(port=port) as plain:  # an openpi client, unaware of fine-tuning, gets actions
            assert plain.infer(probe)["actions"].shape == (5, 5)
        leaving = RobotClient(port=port)
        for _ in range(3):
            leaving.report_step(np.zeros(28, np.float32), np.zeros(5, np.float32), policy_version=later, reward=-1.0)
        leaving.close()  # mid-episode
        deadline = time.time() + 30
        while len(list((out / "robot").glob("*.hdf5"))) < 4 and time.time() < deadline:
            time.sleep(0.1)
        printed = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, printed + log.read_text()
    assert "episode 2: failure, 20 steps, 60% by a human" in printed
    assert "episode 3: incomplete, 3 steps -> robot/episode_000003.hdf5 (not trained on)" in printed
    summary = validate_hdf5(out / "robot_episodes.hdf5")
    assert summary.train == ["demo_0", "demo_1", "demo_2"]
    with h5py.File(out / "robot_episodes.hdf5", "r") as file:
        assert [n.decode() for n in file["mask/incomplete"][:]] == ["demo_3"]
        for i, sent in enumerate(logs):
            demo = file[f"data/demo_{i}"]
            assert np.array_equal(demo["obs/state"][:EPISODE_STEPS], np.stack(sent.observations).astype(np.float32))
            assert np.array_equal(demo["actions"][:EPISODE_STEPS], np.stack(sent.actions))  # the human's where it drove
            assert demo["interventions"][:EPISODE_STEPS].tolist() == sent.interventions
            assert demo["policy_versions"][:EPISODE_STEPS].tolist() == sent.versions
            assert np.array_equal(demo["robot_rewards"][:EPISODE_STEPS], np.array(sent.rewards, np.float32))
            assert demo.attrs["label"] == sent.label
    assert logs[2].interventions == [False] * 8 + [True] * 12 and set(logs[2].versions[8:]) == {-1}
    assert np.allclose(Policy.load(out, device="cpu")(probe[OBSERVATION_KEY]), second["actions"], atol=1e-5)
    last = int(latest_checkpoint(out).name.split("_")[1])
    assert last >= 4 + 2 * 3 * EPISODE_STEPS
    assert [v for _, v in scalars(out, "robot/length")] == [EPISODE_STEPS] * 3  # the incomplete one is not logged
    assert np.allclose([v for _, v in scalars(out, "robot/interventions")], [0.0, 0.0, 0.6])

    # The server killed without a word (its learner follows), then restarted: every stored episode is kept and
    # trained on again, numbering goes on, the learner starts from the newest checkpoint.
    process, port = start("--out", str(out), "--resume", "--rewards", "source", "--utd", "2", log=log)
    try:
        with RobotClient(port=port) as client:
            assert client.infer(probe)["policy_version"] == last
            robot = SimulatedRobot(client, ENV, max_episode_steps=10)
            robot.run_episode(3)
            for _ in range(2):
                client.report_step(np.zeros(28, np.float32), np.zeros(5, np.float32), reward=-1.0)
        learners = children(process.pid)
        process.kill()
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert len(learners) == 1
    deadline = time.time() + 60
    while alive(learners[0]) and time.time() < deadline:  # the orphaned learner notices and stops by itself
        time.sleep(0.2)
    assert not alive(learners[0])
    # Restarted again, then its learner alone killed: the server stops in one line, nothing stored is touched.
    process, port = start("--out", str(out), "--resume", "--rewards", "source", log=log)
    try:
        with RobotClient(port=port) as client:
            client.infer(probe)
        os.kill(children(process.pid)[0], signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert "error: the learner process ended (exit code -9)" in log.read_text()
    names = sorted(p.name for p in (out / "robot").glob("*.hdf5"))
    assert names == [f"episode_{i:06d}.hdf5" for i in range(5)]  # only the episode in progress at the kill is lost
    with h5py.File(out / "robot_episodes.hdf5", "r") as file:
        assert [n.decode() for n in file["mask/train"][:]] == ["demo_0", "demo_1", "demo_2", "demo_4"]
        assert [n.decode() for n in file["mask/incomplete"][:]] == ["demo_3"]
    assert "+ 4 robot episodes (70 steps)" in process.started  # the restarted learner trains on every stored one


def test_help_and_every_bad_flag_is_one_error_line(cube_run: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--offline-ratio" in capsys.readouterr().out
    bad = [
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--utd", "0"], "argument --utd: 0: must be at least 1"),
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--offline-ratio", "1.5"],
         "--offline-ratio: 1.5: must be in [0, 1]"),
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--publish-every", "0"],
         "--publish-every: 0: must be at least 1"),
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--rewards", "dense"], "invalid choice"),
        (["--out", str(tmp_path / "a")], "give --checkpoint"),
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--resume"], "give --checkpoint"),
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--host", "0.0.0.0"], "give --token-file"),
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--port", "70000"], "a port is in"),
        (["--out", str(tmp_path / "a"), "--checkpoint", str(cube_run), "--token-file", str(tmp_path / "none")],
         "cannot read it"),
    ]
    for argv, message in bad:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv
    (tmp_path / "file").write_text("")
    refused = [
        (["--out", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "nothing")], "error: --checkpoint"),
        (["--out", str(tmp_path / "b"), "--resume"], "holds no complete checkpoint"),
        (["--out", str(cube_run), "--checkpoint", str(cube_run)], "already holds a run"),
        (["--out", str(tmp_path / "b"), "--checkpoint", str(cube_run), "--dataset", "x.hdf5"],
         "reads its own data"),
    ]
    for argv, message in refused:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b" / "robot").exists()


def test_the_robot_loop_example_fine_tunes_a_camera_run_with_its_operator(robot_run: Path, tmp_path: Path):
    """examples/robot_loop.py --finetune against a run of robot camera data (two cameras, joints): the scripted
    operator's episodes and its take-over steps are stored, the camera frames with them."""
    out, log = tmp_path / "ft", tmp_path / "server.log"
    process, port = start("--checkpoint", str(robot_run), "--out", str(out), "--publish-every", "1", log=log)
    try:
        example = subprocess.run([sys.executable, "examples/robot_loop.py", "--server", f"ws://127.0.0.1:{port}",
                                  "--finetune", "--episodes", "2", "--episode-steps", "6", "--takeover-steps", "2",
                                  "--rate", "30"], cwd=REPO, capture_output=True, text=True, timeout=120)
        printed = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert example.returncode == 0, example.stdout + example.stderr
    assert "2 episodes at 30 Hz" in example.stdout and "2 steps by the human" in example.stdout
    assert "episode 1: failure, 6 steps, 33% by a human" in printed, printed + log.read_text()
    summary = validate_hdf5(out / "robot_episodes.hdf5")
    assert summary.train == ["demo_0", "demo_1"] and summary.cameras == {"front": (12, 16, 3), "wrist": (8, 8, 3)}
    with h5py.File(out / "robot_episodes.hdf5", "r") as file:
        assert file["data/demo_1/interventions"][:].tolist() == [False] * 4 + [True] * 2 + [False]
        assert not file["data/demo_1/actions"][4:6].any()  # the operator's (zero) actions
        assert file["data/demo_0/rewards"][:].sum() == 0  # sparse (the offline file's scheme): failures earn 0
    refused = subprocess.run([sys.executable, "examples/robot_loop.py", "--checkpoint", str(robot_run), "--finetune"],
                             cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "--finetune reports to a fine-tuning server" in refused.stderr
