"""A policy server on the openpi-client websocket protocol, and a client for it.

The protocol (what `openpi_client.WebsocketClientPolicy` speaks): a client connects (optionally sending
`Authorization: Api-Key <token>`), the server sends its metadata, then each message the client sends is an
observation dict and each reply the action dict `{"actions": (horizon, action_dim) float32, "server_timing":
{...}}`. Messages are msgpack, numpy arrays packed as `{b"__ndarray__": True, b"data", b"dtype", b"shape"}`. A
bad request gets a text reply naming the problem (the openpi client raises it) and the connection stays open.

A policy whose observation is one array (state tasks) reads it from the key "observation".
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import msgpack
import numpy as np

from visual_lps.policy import ObservationError, Policy

OBSERVATION_KEY = "observation"
"""the request key of a policy whose observation is one array"""


def _pack_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "VOc":
            raise ValueError(f"cannot send arrays of dtype {value.dtype}")
        return {b"__ndarray__": True, b"data": value.tobytes(), b"dtype": value.dtype.str, b"shape": value.shape}
    if isinstance(value, np.generic):
        return {b"__npgeneric__": True, b"data": value.item(), b"dtype": value.dtype.str}
    raise TypeError(f"cannot send {type(value).__name__}")


def _unpack_hook(value: dict) -> Any:
    if b"__ndarray__" in value:
        return np.ndarray(buffer=value[b"data"], dtype=np.dtype(value[b"dtype"]), shape=value[b"shape"])
    if b"__npgeneric__" in value:
        return np.dtype(value[b"dtype"]).type(value[b"data"])
    return value


def pack(message: Any) -> bytes:
    return msgpack.packb(message, default=_pack_default)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, object_hook=_unpack_hook)


class PolicyServer:
    """Serves one `Policy` to any number of clients; inference runs one request at a time (in a worker thread,
    so the event loop keeps accepting connections and answering bad requests)."""

    def __init__(self, policy: Policy, metadata: dict[str, Any], token: str | None = None):
        self.policy, self.token = policy, token
        self.metadata = metadata
        self._lock = threading.Lock()

    def reply(self, data: bytes | str) -> bytes | str:
        """The answer to one request: packed actions, or a text naming what is wrong with the request."""
        if isinstance(data, str):
            return "bad request: expected a binary msgpack message, got text"
        try:
            observation = unpack(data)
        except Exception as e:  # noqa: BLE001 - any undecodable payload is the client's error, named
            return f"bad request: not a msgpack observation ({type(e).__name__}: {e})"
        if not isinstance(observation, Mapping):
            return f"bad request: expected an observation dict, got {type(observation).__name__}"
        if not isinstance(self.policy.obs_spec, Mapping):
            if OBSERVATION_KEY not in observation:
                return f"bad request: observation key(s) ['{OBSERVATION_KEY}'] missing (have {sorted(observation)})"
            observation = observation[OBSERVATION_KEY]
        start = time.perf_counter()
        try:
            with self._lock:
                actions = self.policy(observation)
        except ObservationError as e:
            return f"bad request: {e}"
        infer_ms = 1000 * (time.perf_counter() - start)
        return pack({"actions": np.ascontiguousarray(actions, dtype=np.float32), "server_timing": {"infer_ms": infer_ms}})

    def authorised(self, headers: Mapping[str, str]) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(headers.get("Authorization", ""), f"Api-Key {self.token}")

    async def serve(self, host: str, port: int, stop: asyncio.Future,
                    on_ready: Callable[[int], None] | None = None) -> None:
        """Accept clients on host:port until `stop` is done; then close every connection and return.
        `on_ready` gets the port listened on (the one chosen when `port` is 0)."""
        from websockets.asyncio.server import serve

        def check_token(connection, request):
            if not self.authorised(request.headers):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid 'Authorization: Api-Key <token>' is "
                                                                   "needed\n")
            return None

        async def handler(connection) -> None:
            await connection.send(pack(self.metadata))
            async for message in connection:
                await connection.send(await asyncio.to_thread(self.reply, message))

        async with serve(handler, host, port, compression=None, max_size=None, process_request=check_token) as server:
            if on_ready is not None:
                on_ready(server.sockets[0].getsockname()[1])
            await stop


class PolicyClient:
    """The project's client of a `PolicyServer` (the openpi client works the same way)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, timeout: float = 10.0):
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {token}"} if token else None
        self._connection = connect(f"ws://{host}:{port}", compression=None, max_size=None,
                                   additional_headers=headers, open_timeout=timeout)
        self.metadata = unpack(self._connection.recv())

    def infer(self, observation: dict[str, Any]) -> dict[str, Any]:
        """The server's action dict; RuntimeError with the server's message for a bad request."""
        self._connection.send(pack(observation))
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
