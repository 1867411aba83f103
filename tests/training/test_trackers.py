"""Scalars go through Accelerate's trackers: TensorBoard in tb/ always, Weights & Biases with --log-with wandb
(here the real wandb package, offline: no network), the config as its hyperparameters, one W&B run per folder."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.test_train import TINY_NETS
from visual_lps.training.flags import parse_args
from visual_lps.training.trainer import train


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (`run-<id>.wandb`): a 7-byte W&B header, then LevelDB's log
    format (32 KiB blocks; records of checksum, length, kind: full, first, middle, last) holding protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, pos, parts, out = path.read_bytes(), 7, [], []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = [payload] if kind in (1, 2) else parts + [payload]
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            out.append(record)
    return out


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--task", "cube-single", "--dataset-dir", str(data), "--out", str(out), *TINY_NETS, "--batch-size", "16",
            "--eval-episodes", "0", "--save-every", "2", "--log-every", "1", "--no-progress", *extra]


def test_log_with_wandb_records_the_scalars_and_the_config_offline_and_a_resume_continues_the_run(
        tiny_cube_dir: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(*parse_args(tiny(tiny_cube_dir, out, "--steps", "2", "--log-with", "wandb", "--wandb-project", "p")))
    (first,) = (out / "wandb").glob("offline-run-*")
    run_id = (out / "wandb" / "visual_lps_run_id").read_text().strip()
    assert first.name.endswith(run_id)
    records = wandb_records(next(first.glob("run-*.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.project, run.display_name) == (run_id, "p", "run")
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == [1, 2] and all("critic/loss" in h and "actor/loss" in h for h in history)
    config = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}
    assert config["train/steps"] == 2 and config["agent/horizon"] == 5 and config["agent/critic_hidden_dims"] == "(32, 32)"
    assert list((out / "tb").glob("events.out.tfevents.*"))  # TensorBoard as well, as tools/report.py reads it

    train(*parse_args(["--resume", "--out", str(out), "--steps", "4", "--log-with", "wandb"]))
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(run_id) for run in runs)  # the same W&B run, continued


def test_log_with_names_its_choices(tmp_path: Path):
    with pytest.raises(SystemExit, match=r"--log-with mlflow: out of range, must be tensorboard or wandb"):
        parse_args(["--task", "cube-single", "--out", str(tmp_path / "a"), "--log-with", "mlflow"])


def test_log_with_wandb_without_the_package_is_one_error_line(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else object())
    with pytest.raises(SystemExit, match=r"--log-with wandb: the wandb package is not installed \(pip install wandb\)"):
        parse_args(["--task", "cube-single", "--out", str(tmp_path / "a"), "--log-with", "wandb"])
    assert not (tmp_path / "a").exists()


def test_evaluation_videos_are_written_to_the_run_folder_and_logged_to_wandb(tiny_cube_dir: Path, tmp_path: Path,
                                                                           monkeypatch):
    """--eval-videos 1: the first evaluation episode rendered (episodes shortened to 6 steps here: rendering on a
    CPU takes a fraction of a second per frame)."""
    pytest.importorskip("wandb")
    import imageio.v2 as imageio

    from visual_lps.envs import ogbench_env

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    make = ogbench_env.make_eval_env
    monkeypatch.setattr(ogbench_env, "make_eval_env", lambda name, render_size=None, max_episode_steps=None:
                        make(name, render_size, max_episode_steps=6))
    out = tmp_path / "run"
    train(*parse_args(tiny(tiny_cube_dir, out, "--steps", "2", "--eval-every", "2", "--eval-episodes", "2",
                           "--eval-videos", "1", "--log-with", "wandb")))
    video = out / "videos" / "step_00000002.mp4"
    frames = imageio.mimread(video)
    assert len(frames) == 6 and frames[0].shape == (256, 256, 3)  # one episode of two, the simulator's view
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    logged = {item.nested_key[1]: json.loads(item.value_json) for r in wandb_records(next(run_dir.glob("run-*.wandb")))
              if r.WhichOneof("record_type") == "history" for item in r.history.item
              if list(item.nested_key[:1]) == ["eval/video"]}
    assert logged["_type"] == "video-file" and logged["path"].endswith(".mp4")
    assert (run_dir / "files" / logged["path"]).read_bytes() == video.read_bytes()
    with pytest.raises(SystemExit, match=r"--eval-videos 3: out of range, must be 0 to --eval-episodes"):
        parse_args(tiny(tiny_cube_dir, tmp_path / "bad", "--eval-episodes", "2", "--eval-videos", "3"))
