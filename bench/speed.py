"""Speed of visual-lps on the device it runs on, printed as one table.

- update: steps/s of one training update (forward, gradients, Adam, Polyak, metric sums) at batch 256, h = 5,
  data already on the device, for three agents: state (cube-single sizes: 28-D state, 5-D actions), visual
  (3 stacked 64x64 frames, shared impala_small, random shift p = 0.5) and robot (two 128x128 cameras and 8-D
  proprioception, 7-D actions); eager and compiled (one graph; CUDA graphs on CUDA), fp32, TF32 (CUDA) and bf16
  autocast, and channels-last for the image agents;
- train.py: steps/s of real `train.py` runs, loader and loop included (TensorBoard's perf/steps_per_second
  over the last log window, after compilation): cube-single and visual-cube-single on small datasets
  generated with the upstream procedure, and the robot agent on an HDF5 file written with the project's writer;
- act: one action chunk at batch 1 (p50 and p99 over --act-calls calls), eager and compiled.

    python bench/speed.py [--device cuda] [--steps 200] [--parts update,train,act] [--kinds state,visual,robot]
    python bench/speed.py --parts data      # only make the small datasets of the train.py rows

Compare with the JAX reference on the same machine in the same hour (../shared/bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from visual_lps.agents.lps import LPSAgent, LPSConfig  # noqa: E402
from visual_lps.training.update import UpdateStep  # noqa: E402

KINDS = {
    "state": (dict(), (28,), 5),
    "visual": (dict(encoder="impala_small", frame_stack=3, augment_prob=0.5), (3, 64, 64, 3), 5),
    "robot": (dict(encoder="impala_small", augment_prob=0.5),
              {"exterior_image": (128, 128, 3), "wrist_image": (128, 128, 3), "proprio": (8,)}, 7),
}
VARIANTS = {  # name -> (compile, bf16, channels-last, TF32 matmuls on CUDA)
    "eager fp32": (False, False, False, False),
    "eager bf16": (False, True, False, False),
    "compiled fp32": (True, False, False, False),
    "compiled tf32": (True, False, False, True),
    "compiled bf16": (True, True, False, False),
    "compiled bf16 channels-last": (True, True, True, False),
}


def observations(spec, batch: int, device: torch.device, generator: torch.Generator):
    if isinstance(spec, dict):
        return {key: observations(shape, batch, device, generator) for key, shape in spec.items()}
    if len(spec) > 2:
        return torch.randint(0, 256, (batch, *spec), dtype=torch.uint8, device=device, generator=generator)
    return torch.randn(batch, *spec, device=device, generator=generator)


def make_agent(kind: str, device: torch.device, channels_last: bool = False, shared_encoder: bool = True) -> LPSAgent:
    overrides, spec, action_dim = KINDS[kind]
    torch.manual_seed(0)
    agent = LPSAgent(LPSConfig(horizon=5, shared_encoder=shared_encoder, **overrides), spec, action_dim).to(device)
    if channels_last:
        agent.to(memory_format=torch.channels_last)
    return agent


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_update(
    kind: str, variant: str, device: torch.device, batch_size: int, steps: int, shared_encoder: bool = True
) -> tuple[float, float]:
    """(steps/s, seconds of the first call(s): compilation) of the update on fixed batches."""
    compile, bf16, channels_last, tf32 = VARIANTS[variant]
    torch._dynamo.reset()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    agent = make_agent(kind, device, channels_last, shared_encoder)
    optimizer = torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=3e-4)
    update = UpdateStep(agent, optimizer, compile=compile, mixed_precision="bf16" if bf16 else None)
    generator = torch.Generator(device).manual_seed(0)
    spec, h, a = agent.obs_spec, agent.config.horizon, agent.action_dim
    batches = [{
        "observations": observations(spec, batch_size, device, generator),
        "next_observations": observations(spec, batch_size, device, generator),
        "actions": torch.rand(batch_size, h, a, device=device, generator=generator) * 2 - 1,
        "rewards": -torch.ones(batch_size, h, device=device),
        "masks": torch.ones(batch_size, h, device=device),
        "random": agent.draw_random_inputs(batch_size, device, generator),
    } for _ in range(2)]
    start = time.perf_counter()
    for i in range(3):  # eager first call, compilation, one replay
        update(batches[i % 2])
    synchronize(device)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        update(batches[i % 2])
    synchronize(device)
    update.metrics()
    return steps / (time.perf_counter() - start), warmup


def time_act(kind: str, device: torch.device, calls: int, compiled: bool) -> tuple[float, float]:
    """(p50, p99) milliseconds of one chunk at batch 1, observation already on the device."""
    torch._dynamo.reset()
    agent = make_agent(kind, device).eval()
    if compiled:
        agent.compile_act()
    act = agent.act if compiled else agent.act_eager
    obs = observations(agent.obs_spec, 1, device, torch.Generator(device).manual_seed(0))
    for _ in range(20):
        act(obs)
    synchronize(device)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        act(obs)
        synchronize(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return 1000 * statistics.median(times), 1000 * times[int(0.99 * (len(times) - 1))]


def train_commands(kind: str, data_dir: Path) -> list[str]:
    """The train.py arguments of one end-to-end run on data made here (generated or written once)."""
    from visual_lps.data.ogbench_generation import generate

    if kind == "state":
        if not (data_dir / "cube-single-play-v0.npz").exists():
            generate("cube-single-play-v0", data_dir, episodes=20, seed=0, workers=1, progress=False)
        return ["--task", "cube-single", "--dataset-dir", str(data_dir)]
    if kind == "visual":
        if not (data_dir / "visual-cube-single-play-v0.npz").exists():
            generate("visual-cube-single-play-v0", data_dir, episodes=4, seed=0, workers=1, max_episode_steps=60,
                     progress=False)
        return ["--task", "visual-cube", "--dataset-dir", str(data_dir)]
    path = data_dir / "robot.hdf5"
    if not path.exists():
        from visual_lps.data.robot_hdf5 import Episode, HDF5DatasetWriter

        rng = np.random.default_rng(0)
        with HDF5DatasetWriter(path, compression="none") as writer:
            for i in range(8):
                n = 100
                writer.add(Episode(
                    images={camera: rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
                            for camera in ("exterior", "wrist")},
                    proprio={"proprio": rng.normal(size=(n, 8)).astype(np.float32)},
                    actions=rng.uniform(-1, 1, (n, 7)).astype(np.float32), success=True, source=f"synthetic-{i}",
                ))
    return ["--task", "robot", "--dataset", str(path), "--encoder", "impala_small", "--augment-prob", "0.5"]


def time_train(kind: str, device: torch.device, batch_size: int, steps: int, compile: bool, data_dir: Path) -> float:
    """steps/s of a real train.py run over its last log window (loader, update and loop)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, str(ROOT / "train.py"), *train_commands(kind, data_dir), "--out", out,
                   "--steps", str(steps), "--batch-size", str(batch_size), "--log-every", str(max(steps // 4, 1)),
                   "--eval-episodes", "0", "--save-every", str(steps), "--no-progress",
                   "--compile" if compile else "--no-compile"]
        env = os.environ | ({"CUDA_VISIBLE_DEVICES": ""} if device.type == "cpu" else {})
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"train.py exited {result.returncode}:\n{result.stderr[-3000:]}")
        events = EventAccumulator(str(Path(out) / "tb"), size_guidance={"scalars": 0})
        events.Reload()
        return events.Scalars("perf/steps_per_second")[-1].value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed updates per row (default 200 on CUDA, 20 on CPU)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="steps of each train.py run (default 2,000 on CUDA, 200 on CPU)")
    parser.add_argument("--act-calls", type=int, default=1000)
    parser.add_argument("--parts", default="update,train,act",
                        help="comma-separated: update, train, act; or data (only make train's datasets)")
    parser.add_argument("--kinds", default="state,visual,robot", help="comma-separated: state, visual, robot")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated update variants")
    parser.add_argument("--data-dir", default="data/bench-speed", help="where the small datasets are made once")
    parser.add_argument("--per-network-encoders", action="store_true",
                        help="image agents with one encoder per network (the reference's layout) instead of one shared")
    args = parser.parse_args()

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    steps = args.steps or (200 if on_cuda else 20)
    train_steps = args.train_steps or (2000 if on_cuda else 200)
    parts, kinds = args.parts.split(","), args.kinds.split(",")
    name = torch.cuda.get_device_name(device) if on_cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"# visual-lps speed on {name}, torch {torch.__version__}, batch {args.batch_size}, h = 5")
    print("| work | agent | variant | result | first calls (s) |")
    print("| --- | --- | --- | --- | --- |")
    rates: dict[tuple[str, str], float] = {}
    failures = 0

    @contextlib.contextmanager
    def row(work: str, kind: str, variant: str):
        """A failing row is printed as failed (its traceback on stderr) and the table goes on."""
        nonlocal failures
        try:
            yield
        except Exception as error:  # noqa: BLE001 - one broken configuration must not hide the others
            failures += 1
            traceback.print_exc()
            message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            print(f"| {work} | {kind} | {variant} | failed: {message[:200]} | |", flush=True)

    for kind in kinds:
        if "data" in parts:
            with row("data", kind, "made once"):
                train_commands(kind, ROOT / args.data_dir)
                print(f"| data | {kind} | made once | ready in {args.data_dir} | |", flush=True)
        if "update" in parts:
            for variant in args.variants.split(","):
                if (VARIANTS[variant][2] and kind == "state") or (VARIANTS[variant][3] and not on_cuda):
                    continue  # no convolutions to lay out; no TF32 off CUDA
                with row("update", kind, variant):
                    rate, warmup = time_update(kind, variant, device, args.batch_size, steps,
                                               shared_encoder=not args.per_network_encoders)
                    rates[kind, variant] = rate
                    print(f"| update | {kind} | {variant} | {rate:.1f} steps/s ({1000 / rate:.2f} ms) "
                          f"| {warmup:.1f} |", flush=True)
        if "train" in parts:
            compile = on_cuda  # train.py's default
            variant = "compiled fp32" if compile else "eager fp32"
            with row("train.py end to end", kind, variant):
                rate = time_train(kind, device, args.batch_size, train_steps, compile, ROOT / args.data_dir)
                alone = rates.get((kind, variant))
                share = f"; {rate / alone:.0%} of the update alone" if alone else ""
                print(f"| train.py end to end | {kind} | {variant} (default) | {rate:.1f} steps/s{share} | |",
                      flush=True)
        if "act" in parts:
            for compiled in (False, True):
                variant = "compiled" if compiled else "eager"
                with row("act, batch 1", kind, variant):
                    start = time.perf_counter()
                    p50, p99 = time_act(kind, device, args.act_calls, compiled)
                    elapsed = time.perf_counter() - start
                    print(f"| act, batch 1 | {kind} | {variant} | p50 {p50:.3f} ms, p99 {p99:.3f} ms "
                          f"| {elapsed:.1f} |", flush=True)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
