"""Serve a trained policy to robot processes over websockets, on the openpi-client protocol.

    python tools/serve_policy.py --checkpoint runs/robot-mytask-lps-s0 [--host 127.0.0.1] [--port 8000]

A robot runtime built on openpi-client (`WebsocketClientPolicy(host, port)`) drives it unchanged: on connect it
receives the metadata (horizon, action_dim, the observation keys and shapes), then sends observation dicts
(camera frames uint8 HxWx3 under `<camera>_image`, proprioception arrays; a state policy reads the key
"observation") and receives `{"actions": (horizon, action_dim)}` in the robot's units. The server listens on
loopback by default; any other address needs a token, which clients present as `Authorization: Api-Key TOKEN`.
Give it in a file (--token-file, its first line) or in the environment variable VISUAL_LPS_TOKEN; --token TOKEN
works too but shows the secret to every user of the machine (ps, /proc). The header's bytes are compared with
the token's UTF-8 bytes (openpi-client sends headers as Latin-1: give it an ASCII token). A message larger than
twice the run's largest valid observation plus 1 MiB (max_message_bytes in the metadata) closes its connection
with code 1009 (message too big). The metadata names the run, not where it lies on this machine.
SIGINT or SIGTERM closes the connections and stops the server (exit 130 or 143).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_VARIABLE = "VISUAL_LPS_TOKEN"


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


def read_token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """The token from --token-file, --token or $VISUAL_LPS_TOKEN (in that order); parser.error for an empty,
    unreadable or unsendable one (a header cannot carry control characters)."""
    if args.token_file is not None and args.token is not None:
        parser.error("give --token-file or --token, not both")
    if args.token_file is not None:
        try:
            lines = Path(args.token_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            parser.error(f"--token-file {args.token_file}: cannot read it ({e})")
        token, source = (lines[0].strip() if lines else ""), f"--token-file {args.token_file}"
    elif args.token is not None:
        print("warning: --token is visible to every user of this machine (ps, /proc); prefer --token-file or "
              f"${TOKEN_VARIABLE}", file=sys.stderr)
        token, source = args.token, "--token"
    elif os.environ.get(TOKEN_VARIABLE) is not None:
        token, source = os.environ[TOKEN_VARIABLE], f"${TOKEN_VARIABLE}"
    else:
        return None
    if not token or any(ord(c) < 32 or ord(c) == 127 for c in token):
        parser.error(f"{source}: the token is empty or holds control characters, which no header can carry")
    return token


def run_name(checkpoint: Path) -> str:
    """The run's folder name (runs/<name>/checkpoints/step_N), told to clients instead of a path on this machine."""
    from visual_lps.runs.folder import RunFolder

    run = RunFolder.of_checkpoint(checkpoint)
    return run.root.name if run else checkpoint.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="run folder (its newest checkpoint) or checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--token-file", default=None, help="file whose first line is the secret clients must "
                                                           f"present (or set ${TOKEN_VARIABLE}); required off loopback")
    parser.add_argument("--token", default=None, help="the secret itself (visible in ps: prefer --token-file or "
                                                      f"${TOKEN_VARIABLE})")
    parser.add_argument("--device", default="auto", help="torch device of the policy (default: cuda if present)")
    args = parser.parse_args(argv)
    token = read_token(args, parser)
    if not is_loopback(args.host) and token is None:
        parser.error(f"--host {args.host} is reachable from other machines: give --token-file (or "
                     f"${TOKEN_VARIABLE}) so that only your clients are served")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    import yaml

    from visual_lps.runs.checkpoints import load_agent
    from visual_lps.observations import spec_to_yaml
    from visual_lps.deploy.policy import Policy, resolve_device
    from visual_lps.deploy.serving import OBSERVATION_KEY, PolicyServer

    try:  # a damaged or foreign checkpoint is one line, whichever file of it is at fault; each file hashed once
        loaded = load_agent(args.checkpoint, resolve_device(args.device))
        policy = Policy(loaded.agent, args.device)
    except (ValueError, OSError, yaml.YAMLError) as e:
        print(f"error: --checkpoint {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    checkpoint, spec = loaded.path, policy.obs_spec
    metadata = {"run": run_name(checkpoint), "checkpoint": checkpoint.name, "agent": loaded.train_cfg.agent,
                "task": loaded.train_cfg.task,
                "horizon": policy.horizon, "action_dim": policy.action_dim, "frame_stack": policy.frame_stack,
                "observation_spec": spec_to_yaml(spec) if isinstance(spec, dict) else {OBSERVATION_KEY: list(spec)}}
    server = PolicyServer(policy, metadata, token)
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
