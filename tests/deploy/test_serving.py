"""tools/serve_policy.py: a real server process on loopback, driven by the project's client (the openpi-client
wire format): metadata, actions equal to the local Policy's, bad requests answered and survived, several
clients at once, tokens off loopback, a clean stop on SIGTERM."""

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.deploy.test_policy import observation
from visual_lps.deploy.policy import Policy
from visual_lps.deploy.serving import PolicyClient, pack


@pytest.fixture
def server(robot_run: Path):
    process = subprocess.Popen([sys.executable, "tools/serve_policy.py", "--checkpoint", str(robot_run), "--port",
                                "0", "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    line = process.stdout.readline()
    match = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
    assert match, line + process.stderr.read()
    yield process, int(match.group(1))
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serves_the_policys_chunks_with_metadata_and_survives_bad_requests(server, robot_run: Path):
    process, port = server
    expected = Policy.load(robot_run, device="cpu")(observation())
    with PolicyClient(port=port) as client:
        assert client.metadata["horizon"] == 5 and client.metadata["action_dim"] == 4
        assert client.metadata["observation_spec"]["front_image"] == [12, 16, 3]
        reply = client.infer(observation())
        assert reply["actions"].dtype == np.float32 and np.allclose(reply["actions"], expected, atol=1e-6)
        for bad, message in [
            ({k: v for k, v in observation().items() if k != "joints"}, "observation key(s) ['joints'] missing"),
            (observation() | {"front_image": np.zeros((3, 3, 3), np.uint8)}, "'front_image' has shape (3, 3, 3)"),
            (observation() | {"wrist_image": np.zeros((8, 8, 3), np.float64)}, "'wrist_image' is float64"),
        ]:
            with pytest.raises(RuntimeError, match=re.escape(message)):
                client.infer(bad)
        client._connection.send(b"\xc1 not msgpack")
        assert client._connection.recv().startswith("bad request: not a msgpack observation")
        client._connection.send(pack([1, 2, 3]))
        assert "expected an observation dict" in client._connection.recv()
        assert np.allclose(client.infer(observation())["actions"], expected, atol=1e-6)  # still serving

    results = []

    def one_client() -> None:
        with PolicyClient(port=port) as client:
            results.append(all(np.allclose(client.infer(observation())["actions"], expected, atol=1e-6)
                               for _ in range(5)))

    threads = [threading.Thread(target=one_client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [True] * 4

    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 143 and "server stopped by SIGTERM" in stdout


def test_an_address_off_loopback_needs_a_token_which_clients_must_present(robot_run: Path):
    refused = subprocess.run([sys.executable, "tools/serve_policy.py", "--checkpoint", str(robot_run), "--host",
                              "0.0.0.0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "give --token" in refused.stderr
    process = subprocess.Popen([sys.executable, "tools/serve_policy.py", "--checkpoint", str(robot_run), "--host",
                                "0.0.0.0", "--port", "0", "--token", "s3cret", "--device", "cpu"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+) ", process.stdout.readline()).group(1))
        with pytest.raises(Exception, match="401"):
            PolicyClient(port=port, token="wrong")
        with PolicyClient(port=port, token="s3cret") as client:
            assert client.infer(observation())["actions"].shape == (5, 4)
    finally:
        process.kill()
        process.wait()


def test_bad_flags_are_named(tmp_path: Path):
    def fails(*args: str) -> str:
        result = subprocess.run([sys.executable, "tools/serve_policy.py", *args], cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode != 0
        return result.stderr

    assert "a port is in [0, 65535]" in fails("--checkpoint", str(tmp_path), "--port", "70000")
    assert "invalid port value: 'http'" in fails("--checkpoint", str(tmp_path), "--port", "http")
    assert "error: --checkpoint" in fails("--checkpoint", str(tmp_path / "missing"))


def test_the_robot_loop_example_runs_at_its_rate_locally_and_through_the_server(server, robot_run: Path):
    _, port = server
    for source in (["--checkpoint", str(robot_run)], ["--server", f"ws://127.0.0.1:{port}"]):
        result = subprocess.run([sys.executable, "examples/robot_loop.py", *source, "--rate", "30", "--steps", "12",
                                 "--execution", "replan", "--replan-every", "3"], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "12 steps at 30 Hz (replan)" in result.stdout
    both = subprocess.run([sys.executable, "examples/robot_loop.py", "--checkpoint", str(robot_run), "--server",
                           "ws://127.0.0.1:1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "one of them" in both.stderr
    for flags in (["--rate", "0"], ["--steps", "0"], ["--replan-every", "0"]):
        bad = subprocess.run([sys.executable, "examples/robot_loop.py", "--checkpoint", str(robot_run), *flags],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "--rate must be positive, --steps and --replan-every at least 1" in bad.stderr
