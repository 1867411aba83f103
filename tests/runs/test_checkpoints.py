import json
import runpy
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import visual_lps.runs.checkpoints
from tests.conftest import REPO
from visual_lps.runs.checkpoints import (
    CheckpointError,
    IncompleteCheckpoint,
    checkpoints,
    latest_checkpoint,
    latest_complete_checkpoint,
    load_agent,
    verify_checkpoint,
)
from visual_lps.training.checkpointing import write_manifest


def make_run(tmp_path: Path, steps: list[int], unfinished: int | None = None) -> Path:
    for step in steps:
        (tmp_path / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
    if unfinished is not None:  # a write killed before its rename
        (tmp_path / "checkpoints" / f"step_{unfinished:08d}.tmp").mkdir(parents=True)
    return tmp_path


def test_an_unfinished_write_is_never_the_latest_checkpoint(tmp_path: Path):
    run = make_run(tmp_path, [100, 200], unfinished=300)
    assert latest_checkpoint(run).name == "step_00000200"
    assert [p.name for p in checkpoints(run)] == ["step_00000100", "step_00000200"]


def written_checkpoint(run: Path, step: int) -> Path:
    folder = run / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (folder / "random_states_0.pkl").write_bytes(b"rng" * 100)
    write_manifest(folder)
    return folder


def test_a_checkpoint_verifies_until_a_file_is_truncated_altered_or_missing(tmp_path: Path):
    folder = written_checkpoint(tmp_path, 2)
    verify_checkpoint(folder)
    (folder / "random_states_0.pkl").write_bytes(b"rng" * 50)
    with pytest.raises(IncompleteCheckpoint, match="step_00000002 is incomplete: random_states_0.pkl has 150 bytes, "
                                                   "300 were written"):
        verify_checkpoint(folder)
    (folder / "random_states_0.pkl").write_bytes(b"RNG" * 100)
    with pytest.raises(IncompleteCheckpoint, match="damaged: random_states_0.pkl differs"):
        verify_checkpoint(folder)
    (folder / "random_states_0.pkl").unlink()
    with pytest.raises(IncompleteCheckpoint, match="random_states_0.pkl is missing"):
        verify_checkpoint(folder)


def test_the_newest_complete_checkpoint_is_found_and_the_others_named(tmp_path: Path):
    written_checkpoint(tmp_path, 2)
    newest = written_checkpoint(tmp_path, 4)
    (newest / "model.safetensors").write_bytes(b"")
    found, skipped = latest_complete_checkpoint(tmp_path)
    assert found.name == "step_00000002"
    assert len(skipped) == 1 and "step_00000004" in skipped[0] and "model.safetensors has 0 bytes" in skipped[0]


def test_a_checkpoint_from_before_manifests_is_taken_as_it_is(tmp_path: Path):
    legacy = tmp_path / "step_00000001"
    legacy.mkdir()
    (legacy / "model.safetensors").write_bytes(b"weights")
    verify_checkpoint(legacy)


@pytest.mark.parametrize("manifest, says", [("[]", "manifest.json is a JSON list"),
                                            ('{"model.safetensors": {"sha256": "00"}}', "has no size"),
                                            ('{"../x": {"size": 1, "sha256": "00"}}', "outside the checkpoint")])
def test_resume_passes_over_a_manifest_of_the_wrong_shape(tmp_path: Path, manifest: str, says: str):
    written_checkpoint(tmp_path, 2)
    newest = written_checkpoint(tmp_path, 4)
    (newest / "manifest.json").write_text(manifest)
    found, skipped = latest_complete_checkpoint(tmp_path)
    assert found.name == "step_00000002"
    assert len(skipped) == 1 and "step_00000004 is damaged" in skipped[0] and says in skipped[0]


def foreign_weights(ckpt: Path) -> None:
    save_file({"other.weight": torch.zeros(3)}, str(ckpt / "model.safetensors"))


DAMAGES = {  # what is done to a checkpoint -> (the file named, what the message says)
    "weights of another agent": (foreign_weights, "model.safetensors", "not the weights of the lps agent"),
    "unknown agent": (lambda c: edit_config(c, "agent: lps", "agent: nope"), "config.yaml", "unknown agent 'nope'"),
    "unreadable yaml": (lambda c: (c / "config.yaml").write_text("train: [unclosed"), "config.yaml",
                        "not valid YAML: expected"),
    "extra field": (lambda c: edit_config(c, "agent:\n", "agent:\n  bogus: 1\n"), "config.yaml", "['bogus']"),
    "empty config": (lambda c: (c / "config.yaml").write_text(""), "config.yaml", "no 'train' and 'agent' sections"),
    "bad agent spec": (lambda c: (c / "agent_spec.yaml").write_text("obs_spec: [3]\n"), "agent_spec.yaml",
                       "not an agent spec"),
    "spec of a list": (lambda c: (c / "agent_spec.yaml").write_text("- 1\n"), "agent_spec.yaml", "not an agent spec"),
    "manifest list": (lambda c: (c / "manifest.json").write_text("[]"), "step_00000002",
                      "manifest.json is a JSON list"),
    "manifest entry": (lambda c: (c / "manifest.json").write_text('{"config.yaml": {}}'), "step_00000002",
                       "has no size"),
}


def edit_config(ckpt: Path, old: str, new: str) -> None:
    text = (ckpt / "config.yaml").read_text()
    assert old in text
    (ckpt / "config.yaml").write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_or_foreign_checkpoint_is_one_checkpoint_error_naming_the_file(robot_run: Path, tmp_path: Path,
                                                                                  damage: str):
    ckpt = shutil.copytree(robot_run / "checkpoints" / "step_00000002", tmp_path / "step_00000002")
    change, named, says = DAMAGES[damage]
    change(ckpt)
    if not damage.startswith("manifest"):
        write_manifest(ckpt)  # as a copy with matching digests would be
    with pytest.raises(CheckpointError) as error:
        load_agent(ckpt)
    message = str(error.value)
    assert named in message and says in message and "\n" not in message


def test_the_tools_print_one_error_line_for_a_foreign_checkpoint(robot_run: Path, tmp_path: Path, capsys):
    ckpt = shutil.copytree(robot_run / "checkpoints" / "step_00000002", tmp_path / "step_00000002")
    edit_config(ckpt, "agent: lps", "agent: nope")
    write_manifest(ckpt)
    evaluate = runpy.run_path(str(REPO / "tools" / "evaluate.py"))["main"]
    with pytest.raises(SystemExit) as stop:
        evaluate(["--checkpoint", str(ckpt)])
    assert str(stop.value) == f"error: --checkpoint {ckpt / 'config.yaml'}: unknown agent 'nope'; available: " \
                              f"lps, meanflow-bc, flow-bc, qc-fql, dsrl"
    export = runpy.run_path(str(REPO / "tools" / "export_policy.py"))["main"]
    assert export([str(ckpt), str(tmp_path / "policy.pt2")]) == 1
    assert capsys.readouterr().err == f"error: {ckpt / 'config.yaml'}: unknown agent 'nope'; available: " \
                                      f"lps, meanflow-bc, flow-bc, qc-fql, dsrl\n"
    assert not (tmp_path / "policy.pt2").exists()


def test_evaluate_hashes_each_checkpoint_file_once(robot_run: Path, monkeypatch):
    hashed: list[str] = []
    digest = visual_lps.runs.checkpoints.file_sha256
    monkeypatch.setattr(visual_lps.runs.checkpoints, "file_sha256", lambda path: hashed.append(path.name) or digest(path))
    evaluate = runpy.run_path(str(REPO / "tools" / "evaluate.py"))["main"]
    with pytest.raises(SystemExit, match="no simulator"):  # a robot run: loaded, then refused
        evaluate(["--checkpoint", str(robot_run)])
    manifest = json.loads((robot_run / "checkpoints" / "step_00000002" / "manifest.json").read_text())
    assert sorted(hashed) == sorted(manifest)


def test_serve_policy_hashes_each_checkpoint_file_once(robot_run: Path, monkeypatch):
    import asyncio

    hashed: list[str] = []
    digest = visual_lps.runs.checkpoints.file_sha256
    monkeypatch.setattr(visual_lps.runs.checkpoints, "file_sha256", lambda path: hashed.append(path.name) or digest(path))
    monkeypatch.setattr(asyncio, "run", lambda coroutine: coroutine.close() or 0)  # loaded; not served
    serve = runpy.run_path(str(REPO / "tools" / "serve_policy.py"))["main"]
    assert serve(["--checkpoint", str(robot_run), "--port", "0"]) == 0
    manifest = json.loads((robot_run / "checkpoints" / "step_00000002" / "manifest.json").read_text())
    assert sorted(hashed) == sorted(manifest)
