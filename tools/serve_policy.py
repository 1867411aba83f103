"""Serve a trained policy to robot processes over websockets, on the openpi-client protocol.

    python tools/serve_policy.py --checkpoint runs/robot-mytask-lps-s0 [--host 127.0.0.1] [--port 8000]

A robot runtime built on openpi-client (`WebsocketClientPolicy(host, port)`) drives it unchanged: on connect it
receives the metadata (horizon, action_dim, the observation keys and shapes), then sends observation dicts
(camera frames uint8 HxWx3 under `<camera>_image`, proprioception arrays; a state policy reads the key
"observation") and receives `{"actions": (horizon, action_dim)}` in the robot's units. The server listens on
loopback by default; any other address needs --token, which clients present as `Authorization: Api-Key TOKEN`.
SIGINT or SIGTERM closes the connections and stops the server (exit 130 or 143).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: a port is in [0, 65535]")
    return port


port_number.__name__ = "port"


def is_loopback(host: str) -> bool:
    try:
        return host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run folder (its newest checkpoint) or checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--token", default=None, help="secret clients must present; required off loopback")
    parser.add_argument("--device", default="auto", help="torch device of the policy (default: cuda if present)")
    args = parser.parse_args(argv)
    if not is_loopback(args.host) and not args.token:
        parser.error(f"--host {args.host} is reachable from other machines: give --token so that only your "
                     f"clients are served")

    import yaml

    from visual_lps.checkpoint import IncompleteCheckpoint, resolve_checkpoint
    from visual_lps.observations import spec_to_yaml
    from visual_lps.policy import Policy
    from visual_lps.serving import OBSERVATION_KEY, PolicyServer

    try:
        checkpoint = resolve_checkpoint(args.checkpoint)
        policy = Policy.load(checkpoint, args.device)
    except (FileNotFoundError, IncompleteCheckpoint) as e:
        print(f"error: --checkpoint {e}", file=sys.stderr)
        return 1
    train = yaml.safe_load((checkpoint / "config.yaml").read_text())["train"]
    spec = policy.obs_spec
    metadata = {"checkpoint": str(checkpoint), "agent": train["agent"], "task": train["task"],
                "horizon": policy.horizon, "action_dim": policy.action_dim, "frame_stack": policy.frame_stack,
                "observation_spec": spec_to_yaml(spec) if isinstance(spec, dict) else {OBSERVATION_KEY: list(spec)}}
    server = PolicyServer(policy, metadata, args.token)
    return asyncio.run(run(server, args.host, args.port, checkpoint))


async def run(server, host: str, port: int, checkpoint) -> int:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda s=signum: stop.done() or stop.set_result(s))
    def ready(bound: int) -> None:
        print(f"serving {checkpoint} on ws://{host}:{bound} (chunks of {server.policy.horizon} actions of "
              f"{server.policy.action_dim}; Ctrl-C stops)", flush=True)

    try:
        await server.serve(host, port, stop, ready)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port} ({e.strerror or e})", file=sys.stderr)
        return 1
    signum = stop.result()
    print(f"server stopped by {signal.Signals(signum).name}", flush=True)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
