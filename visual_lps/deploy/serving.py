"""A policy server on the openpi-client websocket protocol, and a client for it.

The protocol (what `openpi_client.WebsocketClientPolicy` speaks): a client connects (optionally sending
`Authorization: Api-Key <token>`), the server sends its metadata, then each message the client sends is an
observation dict and each reply the action dict `{"actions": (horizon, action_dim) float32, "server_timing":
{...}}`. Messages are msgpack, numpy arrays packed as `{b"__ndarray__": True, b"data", b"dtype", b"shape"}`. A
bad request gets a text reply naming the problem (the openpi client raises it) and the connection stays open.

Arrays are decoded only as bool, integers and 16/32/64-bit floats (any byte order; big-endian ones are converted
to native), after checking that their bytes fill their shape exactly: numpy would build an object array from a
client's bytes as pointers. A message larger than the biggest valid observation of the run (plus a margin,
`max_message_bytes` in the metadata) closes the connection with code 1009 (message too big) unread.

A policy whose observation is one array (state tasks) reads it from the key "observation".

A fine-tuning server (tools/finetune_robot.py) serves a `SwappablePolicy`: each reply also carries
`"policy_version"`, the version of the weights that chose the chunk, and messages holding the key "lps_report"
are the robot's reports of executed steps and episode ends (`visual_lps.deploy.episode_recorder`), answered with a
small dict. `RobotClient` speaks both.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from visual_lps.observations import ObsSpec
from visual_lps.deploy.episode_recorder import REPORT_KEY, EpisodeRecorder, ReportError
from visual_lps.deploy.policy import (
    OBSERVATION_KEY,
    NonFiniteActionError,
    ObservationError,
    Policy,
    is_camera,
    key_names,
)
from visual_lps.deploy.swappable import SwappablePolicy

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response


log = logging.getLogger(__name__)

WIRE_DTYPE = re.compile(r"[<>=|]?(b1|[iu][1248]|f[248])")
"""the dtypes a message's arrays may have: bool, integers and 16/32/64-bit floats, in any byte order (never
object, void, strings, datetimes, complex or longdouble, whose layouts are not plain numbers)"""

MAX_DEPTH = 8
"""nesting a message may have (an observation is a dict of arrays, or of lists of them)"""

MESSAGE_MARGIN = 1 << 20
"""bytes a message may have beyond twice the largest valid observation (keys the policy does not read, framing)"""


class DecodeError(ValueError):
    """A message part that is not a plain numeric array or value; the message names where it is."""


def message_limit(spec: ObsSpec) -> int:
    """The largest message a server of `spec` reads: twice its largest valid observation (camera frames as uint8
    arrays, other arrays as float64 or msgpack lists of floats, 9 bytes a number, plus each array's framing), for
    keys the policy does not read, plus MESSAGE_MARGIN."""
    named = spec if isinstance(spec, Mapping) else {OBSERVATION_KEY: spec}
    largest = sum(math.prod(shape) * (1 if is_camera(key, shape) else 9) + 256 for key, shape in named.items())
    return 2 * largest + MESSAGE_MARGIN


def _shown(value: Any) -> str:
    """A client's value in an error message, cut short (a key or dtype may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _wire_dtype(text: Any, where: str) -> np.dtype:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if not isinstance(text, str) or not WIRE_DTYPE.fullmatch(text):
        raise DecodeError(f"{where} has dtype {_shown(text)}: only bool, integer and 16/32/64-bit float arrays "
                          f"are decoded")
    return np.dtype(text)


def _decode_array(packed: dict, where: str) -> np.ndarray:
    """A packed array rebuilt from checked parts: a plain numeric dtype, sizes, and exactly the bytes they need."""
    dtype = _wire_dtype(packed.get(b"dtype"), where)
    shape, data = packed.get(b"shape"), packed.get(b"data")
    if not isinstance(shape, (list, tuple)) or len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape):
        raise DecodeError(f"{where} has shape {_shown(shape)}: expected a list of at most 32 sizes")
    if not isinstance(data, bytes):
        raise DecodeError(f"{where} has data of type {type(data).__name__}: expected bytes")
    needed = math.prod(shape) * dtype.itemsize
    if len(data) != needed:
        raise DecodeError(f"{where} has {len(data):,} bytes of data; shape {tuple(shape)} of {dtype.str} needs "
                          f"{needed:,}")
    try:
        array = np.frombuffer(data, dtype).reshape(shape)
    except ValueError as e:  # sizes beyond what numpy indexes (an empty array may declare any)
        raise DecodeError(f"{where} has shape {_shown(shape)}: {e}") from None
    if dtype.kind == "b":
        return array.view(np.uint8) != 0  # a bool array holds only 0 and 1, whatever bytes the client sent
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _decode_scalar(packed: dict, where: str) -> np.generic:
    dtype = _wire_dtype(packed.get(b"dtype"), where)
    value = packed.get(b"data")
    if type(value) not in (bool, int, float):
        raise DecodeError(f"{where} is a {dtype.str} scalar holding {type(value).__name__}: expected a number")
    try:
        return dtype.type(value)
    except (OverflowError, ValueError) as e:
        raise DecodeError(f"{where}: {_shown(value)} is not a {dtype.str} ({e})") from None


def _decode(value: Any, where: str, depth: int = 0) -> Any:
    """A message as msgpack read it, with its packed numpy arrays and scalars rebuilt (checked first)."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if b"__ndarray__" in value:
            return _decode_array(value, where)
        if b"__npgeneric__" in value:
            return _decode_scalar(value, where)
        return {key: _decode(item, f"{where}[{_shown(key)}]", depth + 1) if isinstance(item, (dict, list)) else item
                for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, f"{where}[{i}]", depth + 1) if isinstance(item, (dict, list)) else item
                for i, item in enumerate(value)]
    return value


def _pack_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "VOc":
            raise ValueError(f"cannot send arrays of dtype {value.dtype}")
        return {b"__ndarray__": True, b"data": value.tobytes(), b"dtype": value.dtype.str, b"shape": value.shape}
    if isinstance(value, np.generic):
        return {b"__npgeneric__": True, b"data": value.item(), b"dtype": value.dtype.str}
    raise TypeError(f"cannot send {type(value).__name__}")


def pack(message: Any) -> bytes:
    return msgpack.packb(message, default=_pack_default)


def unpack(data: bytes) -> Any:
    """A message with its arrays rebuilt; DecodeError naming the part that is not a plain numeric array."""
    return _decode(msgpack.unpackb(data), "message")


class PolicyServer:
    """Serves one `Policy` (or a `SwappablePolicy` a learner updates) to any number of clients; inference runs one
    request at a time (in a worker thread, so the event loop keeps accepting connections and answering bad
    requests). With a `recorder`, it also takes the robot's reports."""

    def __init__(self, policy: Policy | SwappablePolicy, metadata: dict[str, Any], token: str | None = None,
                 recorder: EpisodeRecorder | None = None):
        self.policy, self.recorder = policy, recorder
        self.max_message_bytes = message_limit(policy.obs_spec)
        self.metadata = metadata | {"max_message_bytes": self.max_message_bytes}
        self._expected = None if token is None else f"Api-Key {token}".encode()
        self._lock = threading.Lock()

    def reply(self, data: bytes | str, client: int = 0) -> bytes | str:
        """The answer to one request of `client` (its connection): packed actions (or a report's receipt), or a
        text naming what is wrong with the request."""
        if isinstance(data, str):
            return "bad request: expected a binary msgpack message, got text"
        try:
            observation = unpack(data)
        except DecodeError as e:
            return f"bad request: {e}"
        except Exception as e:  # noqa: BLE001 - any undecodable payload is the client's error, named
            return f"bad request: not a msgpack observation ({type(e).__name__}: {e})"
        if not isinstance(observation, Mapping):
            return f"bad request: expected an observation dict, got {type(observation).__name__}"
        if REPORT_KEY in observation:
            return self.report(observation, client)
        if not isinstance(self.policy.obs_spec, Mapping):
            if OBSERVATION_KEY not in observation:
                return (f"bad request: observation key(s) ['{OBSERVATION_KEY}'] missing "
                        f"(have {key_names(observation)})")
            observation = observation[OBSERVATION_KEY]
        start = time.perf_counter()
        try:
            with self._lock:
                actions = self.policy(observation)
        except ObservationError as e:
            return f"bad request: {e}"
        except NonFiniteActionError as e:
            return f"no actions: {e}"
        infer_ms = 1000 * (time.perf_counter() - start)
        versioned = {}
        if isinstance(self.policy, SwappablePolicy):
            actions, versioned = actions[0], {"policy_version": actions[1]}
        return pack({"actions": np.ascontiguousarray(actions, dtype=np.float32), "server_timing": {"infer_ms": infer_ms}}
                    | versioned)

    def report(self, message: Mapping, client: int) -> bytes | str:
        if self.recorder is None:
            return "bad request: this server takes no reports (it is not fine-tuning: tools/finetune_robot.py is)"
        try:
            return pack(self.recorder.report(client, message))
        except ReportError as e:
            return f"bad report: {e}"

    def disconnected(self, client: int) -> None:
        """A connection closed: the recorder keeps its episode in progress as an incomplete one."""
        if self.recorder is not None:
            stored = self.recorder.disconnected(client)
            if stored is not None:
                log.warning("client left mid-episode: %d steps stored as incomplete episode %d (never trained on)",
                            stored.steps, stored.index)

    def authorised(self, headers: Headers) -> bool:
        """Exactly one Authorization header whose bytes are the token's in UTF-8 (compared in constant time).
        Header values arrive decoded as Latin-1, so their bytes are recovered exactly, whatever a client sent;
        clients built on websockets (openpi-client) send Latin-1, so give them ASCII tokens."""
        if self._expected is None:
            return True
        values = headers.get_all("Authorization")
        if len(values) != 1:
            return False
        return hmac.compare_digest(values[0].encode("latin-1"), self._expected)

    async def serve(self, host: str, port: int, stop: asyncio.Future,
                    on_ready: Callable[[int], None] | None = None) -> None:
        """Accept clients on host:port until `stop` is done; then close every connection and return.
        `on_ready` gets the port listened on (the one chosen when `port` is 0)."""
        from websockets.asyncio.server import serve
        from websockets.exceptions import ConnectionClosed

        def check_token(connection: ServerConnection, request: Request) -> Response | None:
            if not self.authorised(request.headers):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid 'Authorization: Api-Key <token>' is "
                                                                   "needed\n")
            return None

        async def handler(connection: ServerConnection) -> None:
            client = id(connection)
            try:
                await connection.send(pack(self.metadata))
                async for message in connection:
                    await connection.send(await asyncio.to_thread(self.reply, message, client))
            except ConnectionClosed as e:  # the client left, or sent too much: one line, no traceback
                log.warning("client %s:%s disconnected (%s)", *connection.remote_address[:2], e)
            finally:
                await asyncio.to_thread(self.disconnected, client)

        async with serve(handler, host, port, compression=None, max_size=self.max_message_bytes,
                         process_request=check_token) as server:
            if on_ready is not None:
                on_ready(server.sockets[0].getsockname()[1])
            await stop


class PolicyClient:
    """The project's client of a `PolicyServer` (the openpi client works the same way)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, timeout: float = 10.0):
        from websockets.sync.client import connect

        # websockets writes header values as Latin-1: the token's UTF-8 bytes go out as they are.
        headers = {"Authorization": f"Api-Key {token}".encode().decode("latin-1")} if token else None
        # Entered as a context manager (what websockets >= 17.1 asks for; close() ends it): the connection either way.
        self._connection = connect(f"ws://{host}:{port}", compression=None, max_size=None,
                                   additional_headers=headers, open_timeout=timeout).__enter__()
        self.metadata = unpack(self._connection.recv())

    def infer(self, observation: dict[str, Any]) -> dict[str, Any]:
        """The server's action dict; RuntimeError with the server's message for a bad request, ValueError for an
        observation over the server's size limit (which would close the connection)."""
        return self._request(observation)

    def _request(self, content: dict[str, Any]) -> dict[str, Any]:
        message = pack(content)
        limit = self.metadata.get("max_message_bytes")
        if limit is not None and len(message) > limit:
            raise ValueError(f"the observation packs to {len(message):,} bytes, over the server's limit of "
                             f"{limit:,} (max_message_bytes in its metadata)")
        self._connection.send(message)
        reply = self._connection.recv()
        if isinstance(reply, str):
            raise RuntimeError(reply)
        return unpack(reply)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RobotClient(PolicyClient):
    """The robot side of fine-tuning (tools/finetune_robot.py): chunks as from any server (`infer`, whose reply
    carries the `policy_version` that chose them), and reports of each executed step and each episode's end.

        reply = client.infer(observation)                       # {"actions", "policy_version", ...}
        client.report_step(observation, action, policy_version=reply["policy_version"])
        client.report_step(observation, human_action, intervention=True)   # a human in control
        client.end_episode("success", final_observation)        # or "failure", "discard"

    An episode begins with its first step report; closing the connection mid-episode stores it as incomplete."""

    def report_step(self, observation: Any, action: np.ndarray, intervention: bool = False,
                    policy_version: int | None = None, reward: float | None = None) -> dict[str, Any]:
        """One executed step: the observation the action was chosen at (one step's, not stacked), the action the
        robot executed (the human's when `intervention`), the version of the chunk it came from, and the robot's
        reward if it has one. RuntimeError with the server's message for a report it refuses."""
        report = {REPORT_KEY: "step", "observation": observation, "action": np.asarray(action, np.float32),
                  "intervention": bool(intervention)}
        if policy_version is not None:
            report["policy_version"] = int(policy_version)
        if reward is not None:
            report["reward"] = float(reward)
        return self._request(report)

    def end_episode(self, label: str, final_observation: Any = None) -> dict[str, Any]:
        """The operator's label of the episode ("success", "failure" or "discard") and the observation after its
        last action; the reply says where it was stored (`episode`) and whether it is trained on."""
        report = {REPORT_KEY: "end", "label": label}
        if final_observation is not None:
            report["final_observation"] = final_observation
        return self._request(report)
