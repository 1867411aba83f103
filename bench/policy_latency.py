"""Latency of one action chunk at batch 1, the way a robot gets it: `Policy` in-process (eager and compiled),
the exported files (`tools/export_policy.py`, portable and AOTInductor-compiled), and the policy server's round trip on loopback (one client, and
four at once). p50 and p99 over --calls calls, for a state policy (cube-single sizes), a visual one (3 stacked
64x64 frames) and a robot one (two 128x128 cameras + 8-D proprioception); random weights (latency does not
depend on them).

    python bench/policy_latency.py [--calls 1000] [--kinds state,visual,robot]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visual_lps.agents.lps import LPSAgent, LPSConfig  # noqa: E402
from visual_lps.deploy.export import export_policy  # noqa: E402
from visual_lps.deploy.policy import Policy  # noqa: E402
from visual_lps.deploy.serving import OBSERVATION_KEY, PolicyClient, PolicyServer  # noqa: E402

KINDS = {
    "state": (dict(), (28,), 5),
    "visual": (dict(encoder="impala_small", frame_stack=3), (3, 64, 64, 3), 5),
    "robot": (dict(encoder="impala_small"),
              {"exterior_image": (128, 128, 3), "wrist_image": (128, 128, 3), "proprio": (8,)}, 7),
}


def observation(spec, rng: np.random.Generator):
    if isinstance(spec, dict):
        return {key: observation(shape, rng) for key, shape in spec.items()}
    if len(spec) >= 3:
        return rng.integers(0, 256, spec, dtype=np.uint8)
    return rng.normal(size=spec).astype(np.float32)


def percentiles(call, calls: int, warmup: int = 20) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1000 * statistics.median(times), 1000 * times[int(0.99 * (len(times) - 1))]


def serve_in_background(policy: Policy) -> tuple[int, callable]:
    """A PolicyServer on a free loopback port in a thread; returns (port, stop)."""
    loop = asyncio.new_event_loop()
    ready, port = threading.Event(), []
    stop = loop.create_future()

    def run() -> None:
        server = PolicyServer(policy, {"horizon": policy.horizon})
        loop.run_until_complete(server.serve("127.0.0.1", 0, stop, lambda p: (port.append(p), ready.set())))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(30)
    return port[0], lambda: (loop.call_soon_threadsafe(stop.set_result, None), thread.join(10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per row")
    parser.add_argument("--kinds", default="state,visual,robot", help="comma-separated: state, visual, robot")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    print(f"# one chunk at batch 1, torch {torch.__version__}, CPU, {torch.get_num_threads()} threads")
    print("| policy | path | p50 (ms) | p99 (ms) |")
    print("| --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for kind in args.kinds.split(","):
        overrides, spec, action_dim = KINDS[kind]
        torch.manual_seed(0)
        agent = LPSAgent(LPSConfig(horizon=5, **overrides), spec, action_dim)
        policy = Policy(agent, "cpu")
        obs = observation(agent.obs_spec, rng)

        def row(path: str, call) -> None:
            p50, p99 = percentiles(call, args.calls)
            print(f"| {kind} | {path} | {p50:.3f} | {p99:.3f} |", flush=True)

        row("Policy, eager", lambda: policy(obs))
        agent.compile_act()
        row("Policy, compiled (agent.compile_act())", lambda: policy(obs))
        with tempfile.TemporaryDirectory() as folder:
            program = torch.export.load(export_policy(agent, Path(folder) / "policy.pt2")).module()
            batch = {k: torch.from_numpy(v).unsqueeze(0) for k, v in obs.items()} if isinstance(obs, dict) else \
                torch.from_numpy(obs).unsqueeze(0)
            compiled_program = torch._inductor.aoti_load_package(
                str(export_policy(agent, Path(folder) / "compiled.pt2", compiled=True)))
            with torch.inference_mode():
                row("exported .pt2 (torch alone)", lambda: program(batch))
                row("exported .pt2 --compiled (AOTInductor)", lambda: compiled_program(batch))
        port, stop = serve_in_background(policy)
        request = obs if isinstance(obs, dict) else {OBSERVATION_KEY: obs}
        with PolicyClient(port=port) as client:
            row("server round trip, 1 client", lambda: client.infer(request))
        clients = [PolicyClient(port=port) for _ in range(4)]
        results: list[tuple[float, float]] = []

        def one(client: PolicyClient) -> None:
            results.append(percentiles(lambda: client.infer(request), max(args.calls // 4, 1)))

        threads = [threading.Thread(target=one, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for client in clients:
            client.close()
        p50 = statistics.median(r[0] for r in results)
        p99 = max(r[1] for r in results)
        print(f"| {kind} | server round trip, 4 clients at once | {p50:.3f} | {p99:.3f} |", flush=True)
        stop()


if __name__ == "__main__":
    main()
