"""Distributed correctness, exact resume and fault handling of the training loop (visual_lps.training.trainer)."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.test_train import BIN, TINY_NETS, run
from visual_lps.agents import AGENTS, RegisteredAgent
from visual_lps.agents.lps import LPSAgent, LPSConfig
from visual_lps.training.checkpointing import write_manifest
from visual_lps.runs.lock import RunLock
from visual_lps.training.flags import parse_args
from visual_lps.training.trainer import train

CPU_DDP = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
"""two processes with DDP on the CPU (gloo): the documented way to check distributed runs without GPUs"""


def visual(data_dir: Path, out: Path) -> list[str]:
    """A tiny visual run: augmentation, frame stacks and the MeanFlow noise all draw random numbers."""
    return ["train.py", "--task", "visual-cube", "--dataset-dir", str(data_dir), "--out", str(out), *TINY_NETS,
            "--eval-episodes", "0", "--log-every", "1"]


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step_{step:08d}" / "model.safetensors")


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different[:5]}"


COMPILED = ["--compile", "--compile-backend", "eager"]
"""the update traced by dynamo as one graph (fullgraph), run without inductor's minutes of compiling"""


def interrupted_copy(run_dir: Path, copy: Path, step: int) -> Path:
    """`run_dir` as a run stopped right after its checkpoint at `step` would have left it: later ones removed.
    Resuming it must retrace the uninterrupted run's steps bit for bit."""
    shutil.copytree(run_dir, copy)
    for checkpoint in (copy / "checkpoints").iterdir():
        if int(checkpoint.name.removeprefix("step_")) > step:
            shutil.rmtree(checkpoint)
    return copy


def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tiny_visual_dir: Path, tmp_path: Path, capsys):
    """Eager, one process (the CPU default), in this one (train.py's `main`); compiled resume is checked with two
    processes and per baseline."""
    from visual_lps.cli.train import main as train_main

    straight = tmp_path / "straight"
    assert train_main([*visual(tiny_visual_dir, straight)[1:], "--steps", "6", "--save-every", "3"]) == 0
    split = interrupted_copy(straight, tmp_path / "split", 3)
    capsys.readouterr()
    assert train_main(["--resume", "--out", str(split), "--steps", "6"]) == 0
    resumed = capsys.readouterr().out
    assert "resumed from" in resumed and "at step 3" in resumed
    assert_identical(weights(straight, 6), weights(split, 6))
    assert not torch.equal(weights(split, 3)["critic.net.hidden.0.weight"], weights(split, 6)["critic.net.hidden.0.weight"])


def test_two_cpu_processes_stay_in_sync_and_resume_exactly(tiny_visual_dir: Path, tmp_path: Path):
    """Two processes with the shared image encoder feeding prior, critic and actor in one backward pass; their
    gradients averaged by one all-reduce inside the compiled update (the eager update's all-reduce is checked by
    `test_a_baseline_trains_with_two_processes_in_sync`)."""
    env_cpu = {"ACCELERATE_USE_CPU": "1"}
    straight = tmp_path / "straight"
    first = run_env(env_cpu, *CPU_DDP, *visual(tiny_visual_dir, straight), *COMPILED, "--log-every", "2",
                    "--save-every", "2", "--keep-last", "2", "--steps", "6")
    assert "weights identical on all 2 processes" in first.stdout
    assert "gradients averaged over 2 processes" in first.stdout
    assert "one copy on this node, mapped by every local process" in first.stdout
    assert "compiled as one graph" in first.stdout
    assert first.stdout.count("run folder:") == 1  # reported by the main process only
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]
    split = interrupted_copy(straight, tmp_path / "split", 4)
    run_env(env_cpu, *CPU_DDP, "train.py", "--resume", "--out", str(split), *COMPILED, "--steps", "6")
    assert_identical(weights(straight, 6), weights(split, 6))

    # Each process draws its own batches, and each one's sampler state is in the checkpoint.
    generators = load_file(straight / "checkpoints" / "step_00000006" / "training_state.safetensors")
    generators = generators["sampler_generators"]
    assert len(generators) == 2 and not torch.equal(generators[0], generators[1])


def run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*args], cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ | env)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_checkpoints_and_exits_cleanly_then_resume_continues(tiny_cube_dir: Path, tmp_path: Path, sig):
    out = tmp_path / "run"
    command = [sys.executable, "train.py", "--task", "cube-single", "--dataset-dir", str(tiny_cube_dir),
               "--out", str(out), *TINY_NETS, "--eval-episodes", "0", "--steps", "1000000", "--save-every", "1000000",
               "--log-every", "10", "--no-compile"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "tb").glob("events.*")):  # written just before training begins
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.5)
    time.sleep(3)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, stderr[-3000:]  # 143 / 130: stopped early, not finished
    assert f"stopped by {sig.name} after step" in stdout and f"exit status {128 + sig}" in stdout
    stopped_at = int(stdout.split("after step ")[1].split()[0])
    assert (out / "checkpoints" / f"step_{stopped_at:08d}").is_dir()
    resumed = run(sys.executable, "train.py", "--resume", "--out", str(out), "--steps", str(stopped_at + 2))
    assert f"at step {stopped_at}" in resumed.stdout
    assert (out / "checkpoints" / f"step_{stopped_at + 2:08d}").is_dir()


class PoisonedLPS(LPSAgent):
    """LPS whose rewards turn NaN in its 5th update: a stand-in for a diverging run."""

    calls = 0

    def forward(self, batch):
        PoisonedLPS.calls += 1
        if PoisonedLPS.calls == 5:
            batch = batch | {"rewards": batch["rewards"] * float("nan")}
        return super().forward(batch)


def test_a_non_finite_loss_stops_the_run_naming_it_and_keeps_the_last_good_checkpoint(
    tiny_cube_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(AGENTS, "lps", RegisteredAgent(LPSConfig, PoisonedLPS))
    out = tmp_path / "run"
    train_cfg, agent_cfg = parse_args(["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out),
                                       *TINY_NETS, "--eval-episodes", "0", "--steps", "10", "--save-every", "2",
                                       "--log-every", "3"])
    with pytest.raises(SystemExit) as stop:
        train(train_cfg, agent_cfg)
    message = str(stop.value)
    assert "non-finite critic/loss at step 5" in message and "train/grad_norm at step 5" in message
    assert "the last good checkpoint is" in message and "step_00000004" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    assert all(torch.isfinite(v).all() for v in weights(out, 4).values())


def test_sigterm_to_a_two_process_launcher_reaches_both_processes_which_checkpoint_together(
    tiny_cube_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    command = [*CPU_DDP, "train.py", "--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out),
               *TINY_NETS, "--eval-episodes", "0", "--steps", "1000000", "--save-every", "1000000", "--log-every", "10",
               "--no-compile"]
    launcher = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=os.environ | {"ACCELERATE_USE_CPU": "1"}, start_new_session=True)
    deadline = time.time() + 120
    while not list((out / "tb").glob("events.*")):
        assert launcher.poll() is None and time.time() < deadline, launcher.communicate()
        time.sleep(0.5)
    time.sleep(3)
    launcher.send_signal(signal.SIGTERM)  # as a scheduler preempting the job would; torchrun forwards it
    stdout, stderr = launcher.communicate(timeout=120)
    assert "stopped by SIGTERM" in stdout and "weights identical on all 2 processes" in stdout, stderr[-3000:]
    assert len(list((out / "checkpoints").glob("step_*"))) == 1


def test_overwrite_replaces_the_run_in_out_and_only_it(tiny_cube_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    common = ["--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out), *TINY_NETS,
              "--eval-episodes", "0", "--save-every", "2", "--log-every", "2"]
    train(*parse_args([*common, "--steps", "4"]))
    (out / "my_notes.txt").write_text("kept")
    train(*parse_args([*common, "--steps", "2", "--overwrite"]))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]  # step 4 was the old run's
    assert (out / "my_notes.txt").read_text() == "kept"
    resumed, _ = parse_args(["--resume", "--out", str(out), "--steps", "4"])  # --overwrite started it, not sticky
    assert resumed.resume and not resumed.overwrite


def test_the_update_is_compiled_by_default_on_cuda_and_for_long_cpu_runs():
    from visual_lps.config import TrainConfig
    from visual_lps.training.trainer import CPU_COMPILE_MIN_STEPS, compiles_update

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compiles_update(TrainConfig(), cuda, 10) and not compiles_update(TrainConfig(), cpu, 5000)
    assert compiles_update(TrainConfig(), cpu, CPU_COMPILE_MIN_STEPS)  # e.g. the default 1M steps
    assert not compiles_update(TrainConfig(compile=False), cpu, 10**6) and compiles_update(TrainConfig(compile=True), cpu, 1)


def tiny_run(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--task", "cube-single", "--dataset-dir", str(data_dir), "--out", str(out), *TINY_NETS,
            "--eval-episodes", "0", "--save-every", "2", "--log-every", "2", *extra]


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.bin", "random_states_0.pkl",
                                     "training_state.safetensors"])
def test_resume_passes_over_a_damaged_newest_checkpoint_naming_it(tiny_cube_dir: Path, tmp_path: Path, damaged,
                                                                  capsys):
    out = tmp_path / "run"
    train(*parse_args(tiny_run(tiny_cube_dir, out, "--steps", "4")))
    path = out / "checkpoints" / "step_00000004" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a full disk or a copy
    capsys.readouterr()
    train(*parse_args(["--resume", "--out", str(out), "--steps", "6"]))
    printed = capsys.readouterr().out
    assert f"warning: checkpoint {out / 'checkpoints' / 'step_00000004'} is incomplete: {damaged} has" in printed
    assert "resumed from" in printed and "step_00000002 at step 2" in printed
    assert (out / "checkpoints" / "step_00000006").is_dir()


def test_evaluate_refuses_a_damaged_checkpoint_naming_it(tiny_cube_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(*parse_args(tiny_run(tiny_cube_dir, out, "--steps", "2")))
    weights_file = out / "checkpoints" / "step_00000002" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    result = subprocess.run([sys.executable, "tools/evaluate.py", "--checkpoint", str(weights_file.parent)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "step_00000002 is incomplete: model.safetensors has 100 bytes" in result.stderr


FULL_DISK = {  # what each writer of a checkpoint raises on a full disk
    "OSError": OSError(errno.ENOSPC, "No space left on device"),
    "SafetensorError": SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
}


@pytest.mark.parametrize("error", list(FULL_DISK))
def test_a_full_disk_while_checkpointing_is_named_and_keeps_the_earlier_checkpoints(
    tiny_cube_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
):
    import accelerate.utils.other

    save_file = accelerate.utils.other.safe_save_file

    def fills_the_disk(tensors, filename, **kwargs):  # Accelerate's writer of model.safetensors
        if "step_00000004" not in str(filename):
            return save_file(tensors, filename, **kwargs)
        Path(filename).write_bytes(b"partial")
        raise FULL_DISK[error]

    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", fills_the_disk)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train(*parse_args(tiny_run(tiny_cube_dir, out, "--steps", "6")))
    assert f"no space left on device at {out}" in str(stop.value) and "step_00000004 was not written" in str(stop.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]  # no partial folder left


@contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A real small (or read-only) file system at `path`; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                               text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_real_full_disk_stops_the_run_in_one_line_warned_at_start(tiny_cube_dir: Path, tmp_path: Path, capsys):
    """A file system that holds the run folder and one checkpoint (about 220 kB), not two."""
    with mounted_tmpfs(tmp_path / "disk", "size=256k") as disk:
        out = disk / "run"
        with pytest.raises(SystemExit) as stop:
            train(*parse_args(tiny_run(tiny_cube_dir, out, "--steps", "6")))
        assert f"no space left on device at {out}" in str(stop.value) and "the earlier checkpoints are kept" in str(
            stop.value)
        assert "warning: the 3 checkpoints this run will keep" in capsys.readouterr().out
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]



BASELINE_NETS = {
    "flow-bc": ["--bc-flow-hidden-dims", "32,32", "--flow-steps", "3"],
    "qc-fql": ["--critic-hidden-dims", "32,32", "--bc-flow-hidden-dims", "32,32", "--onestep-hidden-dims", "32"],
    "dsrl": ["--bc-flow-hidden-dims", "32,32", "--flow-steps", "3", "--critic-hidden-dims", "32,32",
             "--actor-hidden-dims", "32", "--latent-critic-hidden-dims", "32,32"],
}
NO_CRITIC = ("flow-bc", "meanflow-bc")


@pytest.mark.parametrize("agent", list(BASELINE_NETS))
def test_every_baseline_trains_from_pixels_as_one_graph_resumes_exactly_and_evaluates(
    tiny_visual_dir: Path, tmp_path: Path, agent: str, capsys
):
    """In one process (train.py's and tools/evaluate.py's `main`): `test_train.py` launches the scripts."""
    from visual_lps.cli.evaluate import main as evaluate_main
    from visual_lps.cli.train import main as train_main

    def args(out: Path) -> list[str]:
        return ["--agent", agent, "--task", "visual-cube", "--dataset-dir", str(tiny_visual_dir),
                "--out", str(out), *BASELINE_NETS[agent], "--batch-size", "16", "--no-progress",
                "--eval-episodes", "0", "--log-every", "1", "--save-every", "2", *COMPILED]

    straight = tmp_path / "straight"
    assert train_main([*args(straight), "--steps", "4"]) == 0
    first = capsys.readouterr().out
    assert f"training {agent} on visual-cube" in first and "compiled as one graph" in first
    split = interrupted_copy(straight, tmp_path / "split", 2)
    assert train_main(["--resume", "--out", str(split), *COMPILED, "--steps", "4"]) == 0
    assert_identical(weights(straight, 4), weights(split, 4))
    assert ("critic.net.hidden.0.weight" in weights(split, 4)) == (agent not in NO_CRITIC)
    capsys.readouterr()
    evaluate_main(["--checkpoint", str(split), "--episodes", "1", "--max-episode-steps", "10"])
    assert "success rate" in capsys.readouterr().out


@pytest.mark.parametrize("agent", ["flow-bc", "dsrl"])
def test_the_reference_baselines_train_on_states_and_roll_out(tiny_cube_dir: Path, tmp_path: Path, agent: str):
    """The 10-step flow BC and DSRL over it, on state data through the trainer, evaluated in the simulator."""
    flags = ["--task", "cube-single", "--agent", agent, "--dataset-dir", str(tiny_cube_dir), "--out",
             str(tmp_path / "run"), *BASELINE_NETS[agent], "--batch-size", "16", "--no-progress", "--steps", "2",
             "--eval-every", "2", "--eval-episodes", "1", "--save-every", "2", "--log-every", "1"]
    outcome = train(*parse_args(flags))
    assert outcome.step == 2 and "eval/success_rate" in outcome.metrics


@pytest.mark.parametrize("agent", [*BASELINE_NETS, "meanflow-bc"])
def test_every_baseline_trains_on_robot_hdf5_with_offline_metrics(tmp_path: Path, agent: str, capsys):
    from tests.data.test_robot_hdf5 import make_episode, write

    dataset = tmp_path / "robot.hdf5"
    write(dataset, [make_episode(n, seed=i) for i, n in enumerate([12, 10, 14, 9])], valid_fraction=0.25)
    out = tmp_path / "run"
    flags = ["--task", "robot", "--agent", agent, "--dataset", str(dataset), "--out", str(out), "--encoder",
             "impala_small", *BASELINE_NETS.get(agent, ["--prior-hidden-dims", "32"]), "--batch-size", "8", "--no-progress", "--steps", "2",
             "--eval-every", "2", "--eval-episodes", "0", "--save-every", "2", "--log-every", "1", "--data-cache",
             "none"]
    if agent == "qc-fql":  # no published alpha for robot data: it must be given
        with pytest.raises(SystemExit, match="qc-fql has no published alpha for task 'robot': give --alpha"):
            parse_args(flags)
        flags += ["--alpha", "3"]
    outcome = train(*parse_args(flags))
    assert outcome.step == 2 and "valid/action_mse" in outcome.metrics
    assert ("valid/q_demo" in outcome.metrics) == (agent not in NO_CRITIC)
    assert (out / "checkpoints" / "step_00000002").is_dir()


def test_a_baseline_trains_with_two_processes_in_sync(tiny_cube_dir: Path, tmp_path: Path):
    """DDP is the update's business (one all-reduce of all gradients), the same for every agent: QC-FQL, whose
    networks differ most from LPS's, here."""
    out = tmp_path / "run"
    result = run_env({"ACCELERATE_USE_CPU": "1"}, *CPU_DDP, "train.py", "--agent", "qc-fql",
                     "--task", "cube-single", "--dataset-dir", str(tiny_cube_dir), "--out", str(out),
                     *BASELINE_NETS["qc-fql"], "--batch-size", "16", "--no-progress", "--eval-episodes", "0",
                     "--steps", "2", "--save-every", "2", "--log-every", "1")
    assert "weights identical on all 2 processes" in result.stdout
    assert "gradients averaged over 2 processes" in result.stdout


def test_a_second_run_on_the_same_out_is_refused_at_once_naming_the_first(tiny_cube_dir: Path, tmp_path: Path):
    """Even with --overwrite or --resume: before it loads data or clears anything."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "train.py", *tiny_run(tiny_cube_dir, out, "--steps", "1000000",
                                                                     "--save-every", "1000000", "--no-compile")],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list((out / "tb").glob("events.*")):
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.5)
        before = sorted(p.name for p in out.rglob("*"))
        for flag in ("--overwrite", "--resume"):
            args = tiny_run(tiny_cube_dir, out, "--steps", "4", flag) if flag == "--overwrite" else [
                "--resume", "--out", str(out), "--steps", "4"]
            with pytest.raises(SystemExit) as refused:
                train(*parse_args(args))
            assert str(refused.value).startswith(f"error: --out {out} is in use by another run: pid {first.pid} on "
                                                 f"host {socket.gethostname()} (since ")
            assert str(refused.value).endswith(f"holds {out / 'run.lock'}")
        assert sorted(p.name for p in out.rglob("*")) == before  # nothing cleared, nothing added
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    with RunLock.acquire(out) as lock:  # released when the first run ended
        assert lock.taken_over is None


def planted_pickle(marker: Path) -> bytes:
    """A pickle that creates `marker` when unpickled without weights_only."""
    class Plant:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return pickle.dumps(Plant(), protocol=2)


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_resume_refuses_a_planted_pickle_without_running_it(tiny_cube_dir: Path, tmp_path: Path, planted: str):
    out = tmp_path / "run"
    train(*parse_args(tiny_run(tiny_cube_dir, out, "--steps", "2")))
    ckpt = out / "checkpoints" / "step_00000002"
    marker = tmp_path / "code_ran"
    (ckpt / planted).write_bytes(planted_pickle(marker))
    write_manifest(ckpt)  # the manifest rewritten to match: it verifies
    with pytest.raises(SystemExit) as refused:
        train(*parse_args(["--resume", "--out", str(out), "--steps", "4"]))
    assert not marker.exists()
    assert str(refused.value) == (f"error: --resume: checkpoint {ckpt}: {planted} is not plain data, refused "
                                  f"(Unsupported global: GLOBAL getattr was not an allowed global by default)")


def test_a_run_whose_compilation_fails_says_why_in_one_line_and_finishes_eagerly(tiny_cube_dir: Path, tmp_path: Path,
                                                                                 capsys):
    from tests.training.test_update import failing_backend

    torch._dynamo.reset()
    name = "visual_lps_test_failing"
    if name not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(failing_backend, name=name)
    out = tmp_path / "run"
    outcome = train(*parse_args(tiny_run(tiny_cube_dir, out, "--steps", "4", "--compile", "--compile-backend", name)))
    assert outcome.step == 4 and (out / "checkpoints" / "step_00000004").is_dir()
    said = [line for line in capsys.readouterr().err.splitlines() if "compil" in line]
    assert len(said) == 1 and "compiling the update failed" in said[0] and "--no-compile" in said[0], said
