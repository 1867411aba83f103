"""tools/serve_policy.py against hostile clients (issue 19), through real websockets: messages that would crash,
poison or bloat the server, malformed tokens, clients that vanish, damaged checkpoints. One server process
serves the tests of this module; each checks that it still serves afterwards."""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from tests.conftest import REPO
from tests.deploy.test_policy import observation
from visual_lps.runs.checkpoints import latest_checkpoint
from visual_lps.training.checkpointing import write_manifest
from visual_lps.deploy.policy import Policy
from visual_lps.deploy.serving import PolicyClient, message_limit, pack


def start_server(robot_run: Path, log: Path, *flags: str, env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen, int]:
    """A server process on loopback (its stderr, the log, into `log`) and the port it listens on."""
    environment = {k: v for k, v in os.environ.items() if k != "VISUAL_LPS_TOKEN"} | (env or {})
    process = subprocess.Popen([sys.executable, "tools/serve_policy.py", "--checkpoint", str(robot_run), "--port",
                                "0", "--device", "cpu", *flags], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=log.open("w"), text=True, env=environment)
    line = process.stdout.readline()
    match = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
    assert match, line + log.read_text()
    return process, int(match.group(1))


@pytest.fixture(scope="module")
def served(robot_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    log = tmp_path_factory.mktemp("server") / "stderr.log"
    process, port = start_server(robot_run, log)
    yield process, port, log
    process.kill()
    process.wait()


def packed_array(data: bytes, dtype: str, shape: list[int]) -> dict:
    """An array as a client may declare it, whatever its bytes (msgpack-numpy's wire form)."""
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def ask(client: PolicyClient, message: bytes) -> bytes | str:
    client._connection.send(message)
    return client._connection.recv(timeout=30)


def raw_handshake(port: int, extra_headers: bytes) -> tuple[socket.socket, bytes]:
    """A websocket handshake written by hand (headers no client library would send); the socket and the
    server's status line."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra_headers + b"\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return sock, response.split(b"\r\n")[0]


def test_hostile_arrays_get_a_named_error_and_the_connection_stays_open(served, robot_run: Path):
    process, port, _ = served
    expected = Policy.load(robot_run, device="cpu")(observation())
    pointers = [packed_array(b"\x01" * 8, "|O", [1]) for _ in range(7)]
    big_endian = observation() | {"joints": observation()["joints"].astype(">f4")}
    with PolicyClient(port=port) as client:
        # the message that crashed the server (segfault): object arrays made of the client's bytes
        reply = ask(client, pack(observation() | {"joints": pointers}))
        assert reply == ("bad request: message['joints'][0] has dtype '|O': only bool, integer and 16/32/64-bit "
                         "float arrays are decoded")
        for dtype, data, shape, message in [
            ("|V8", b"\0" * 56, [7], "has dtype '|V8'"),
            ("<U1", b"\0" * 28, [7], "has dtype '<U1'"),
            ("<M8[s]", b"\0" * 56, [7], "has dtype '<M8[s]'"),
            ("<f4", b"\0" * 8, [7], "has 8 bytes of data; shape (7,) of <f4 needs 28"),
            ("<f4", b"", [0, 2 ** 62, 2 ** 62], "has shape [0, 4611686018427387904, 461168601842...: array is too big"),
            ("<f4", b"\0" * 28, [7.0], "has shape [7.0]: expected a list of at most 32 sizes"),
        ]:
            reply = ask(client, pack(observation() | {"joints": packed_array(data, dtype, shape)}))
            assert reply.startswith("bad request: message['joints'] ") and message in reply, reply
        # answered, not a closed connection: big-endian arrays are converted, longdouble is refused
        assert np.allclose(client.infer(big_endian)["actions"], expected, atol=1e-6)
        with pytest.raises(RuntimeError, match=re.escape("message['joints'] has dtype '<f16': only bool")):
            client.infer(observation() | {"joints": observation()["joints"].astype(np.longdouble)})
        # messages the checks did not foresee: mixed key types, ragged lists
        reply = ask(client, msgpack.packb({b"joints": 1, "front_image": 2}))
        assert reply == ("bad request: observation key(s) ['joints', 'wrist_image'] missing "
                         "(have [\"b'joints'\", 'front_image'])")
        with pytest.raises(RuntimeError, match="'joints' is not an array of numbers"):
            client.infer(observation() | {"joints": [[1.0], [2.0, 3.0]]})
        assert np.allclose(client.infer(observation())["actions"], expected, atol=1e-6)
    assert process.poll() is None


def test_finite_values_beyond_float32_never_become_nan_actions(served):
    process, port, _ = served
    with PolicyClient(port=port) as client:
        with pytest.raises(RuntimeError, match=re.escape("bad request: observation 'joints' contains NaN or inf in "
                                                         "float32")):
            client.infer(observation() | {"joints": np.full(7, 1e39)})  # finite as float64
        with pytest.raises(RuntimeError) as error:
            client.infer(observation() | {"joints": np.full(7, 3e38, np.float32)})  # finite, overflows inside
        assert str(error.value).startswith("no actions: the policy's action chunk holds NaN or inf, so none is "
                                           "returned: values far outside the training data overflow float32")
        assert "'joints' 3e+38" in str(error.value)
        assert client.infer(observation())["actions"].shape == (5, 4)
    assert process.poll() is None


def test_a_message_over_the_runs_limit_closes_its_connection_unread(served, robot_run: Path):
    process, port, log = served
    limit = message_limit(Policy.load(robot_run, device="cpu").obs_spec)
    assert limit < 2 << 20  # two small cameras and 7 joints: about 1 MiB and a few KiB
    with PolicyClient(port=port) as client:
        assert client.metadata["max_message_bytes"] == limit
        with pytest.raises(ValueError, match=re.escape(f"over the server's limit of {limit:,} (max_message_bytes")):
            client.infer(observation() | {"padding": np.zeros(limit, np.uint8)})
        assert client.infer(observation())["actions"].shape == (5, 4)  # the client refused it: still connected
        before = log.read_text()
        client._connection.send(b"\0" * (limit + 1))
        with pytest.raises(ConnectionClosed) as closed:
            client._connection.recv(timeout=30)
    assert closed.value.rcvd.code == 1009 and f"exceeds limit of {limit} bytes" in closed.value.rcvd.reason
    time.sleep(0.5)
    new = log.read_text()[len(before):].splitlines()
    assert len(new) == 1 and "1009 (message too big)" in new[0], new
    with PolicyClient(port=port) as client:
        assert client.infer(observation())["actions"].shape == (5, 4)
    assert process.poll() is None


def test_a_client_that_vanishes_mid_request_is_one_log_line(served):
    process, port, log = served
    before = log.read_text()
    sock, status = raw_handshake(port, b"")
    assert status == b"HTTP/1.1 101 Switching Protocols"
    sock.sendall(Frame(Opcode.BINARY, pack(observation())).serialize(mask=True))
    sock.close()  # gone before the reply
    deadline = time.monotonic() + 20
    while log.read_text() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    new = log.read_text()[len(before):].splitlines()
    assert len(new) == 1 and re.search(r"client 127\.0\.0\.1:\d+ disconnected \(", new[0]), new
    assert "Traceback" not in log.read_text()
    with PolicyClient(port=port) as client:
        assert client.infer(observation())["actions"].shape == (5, 4)
    assert process.poll() is None


def test_tokens_are_compared_as_bytes_and_malformed_headers_get_401(robot_run: Path, tmp_path: Path):
    token = "clé-日本-s3cret"
    (tmp_path / "token").write_text(token + "\n", encoding="utf-8")
    process, port = start_server(robot_run, tmp_path / "log", "--token-file", str(tmp_path / "token"))
    try:
        with PolicyClient(port=port, token=token) as client:
            assert client.infer(observation())["actions"].shape == (5, 4)
            assert client.metadata["run"] == robot_run.name and str(robot_run.parent) not in repr(client.metadata)
        with pytest.raises(Exception, match="401"):
            PolicyClient(port=port, token="wrong")
        utf8 = f"Api-Key {token}".encode()
        for headers in [b"Authorization: " + utf8 + b"\r\n",
                        b"Authorization: " + f"Api-Key {token}".encode("latin-1", "replace") + b"\r\n",
                        b"Authorization: " + utf8 + b"\r\nAuthorization: " + utf8 + b"\r\n",  # repeated
                        b"Authorization: Api-Key \xff\xfe\x80\r\n",  # not text in any encoding
                        b""]:
            sock, status = raw_handshake(port, headers)
            sock.close()
            assert status == (b"HTTP/1.1 101 Switching Protocols" if headers.count(b"Authorization") == 1 and
                              utf8 in headers else b"HTTP/1.1 401 Unauthorized"), headers
        with PolicyClient(port=port, token=token) as client:
            assert client.infer(observation())["actions"].shape == (5, 4)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in (tmp_path / "log").read_text()


def serve_policy_tool():
    from visual_lps.cli import serve_policy

    return serve_policy


def test_the_token_comes_from_a_file_or_the_environment_and_a_command_line_token_is_warned_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    tool = serve_policy_tool()

    def token(token: str | None = None, token_file: Path | None = None) -> str | None:
        return tool.read_token(argparse.Namespace(token=token, token_file=token_file), argparse.ArgumentParser())

    monkeypatch.delenv("VISUAL_LPS_TOKEN", raising=False)
    assert token() is None
    monkeypatch.setenv("VISUAL_LPS_TOKEN", "from-the-environment")
    assert token() == "from-the-environment"
    (tmp_path / "token").write_text("from-a-file\nsecond line ignored\n")
    assert token(token_file=tmp_path / "token") == "from-a-file"
    assert capsys.readouterr().err == ""
    assert token(token="typed") == "typed"
    assert "warning: --token is visible to every user of this machine (ps" in capsys.readouterr().err
    (tmp_path / "empty").write_text("\n")
    for flags, message in [
        ({"token_file": tmp_path / "missing"}, f"--token-file {tmp_path / 'missing'}: cannot read"),
        ({"token_file": tmp_path / "empty"}, "the token is empty or holds control characters"),
        ({"token": "a\rb"}, "--token: the token is empty or holds control characters"),
        ({"token": "a", "token_file": tmp_path / "token"}, "give --token-file or --token, not both"),
    ]:
        with pytest.raises(SystemExit):
            token(**flags)
        assert message in capsys.readouterr().err


def test_a_checkpoint_that_cannot_be_loaded_is_one_error_line(robot_run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture):
    tool = serve_policy_tool()
    damaged = tmp_path / "step_damaged"
    shutil.copytree(latest_checkpoint(robot_run), damaged)
    (damaged / "manifest.json").unlink()
    config = damaged / "config.yaml"
    for text in (config.read_text().replace("train:", "train:\n  no_such_field: 1", 1), "train: [unclosed\n"):
        config.write_text(text)
        write_manifest(damaged)  # complete as written: the damage is in what was written
        assert tool.main(["--checkpoint", str(damaged), "--port", "0", "--device", "cpu"]) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("error: --checkpoint ") and str(config) in err, err


def test_the_client_connects_as_websockets_asks_without_deprecation_warnings(served):
    _, port, _ = served
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with PolicyClient(port=port) as client:
            assert client.infer(observation())["actions"].shape == (5, 4)
