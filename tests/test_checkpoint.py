from pathlib import Path

import pytest
import torch

from visual_lps.checkpoint import (
    IncompleteCheckpoint,
    checkpoints,
    latest_checkpoint,
    latest_complete_checkpoint,
    rotate_checkpoints,
    verify_checkpoint,
    weights_digest,
    write_manifest,
)


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


def test_rotation_keeps_the_newest(tmp_path: Path):
    run = make_run(tmp_path, [100, 200, 300, 400])
    deleted = rotate_checkpoints(run, keep_last=2)
    assert [p.name for p in deleted] == ["step_00000100", "step_00000200"]
    assert [p.name for p in checkpoints(run)] == ["step_00000300", "step_00000400"]
    assert rotate_checkpoints(run, keep_last=0) == [] and len(checkpoints(run)) == 2


def test_weight_digests_see_a_single_bit():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(weights_digest(a), weights_digest(b))
    with torch.no_grad():
        b.weight.view(-1)[5] = torch.nextafter(b.weight.view(-1)[5], torch.tensor(1.0))
    assert not torch.equal(weights_digest(a), weights_digest(b))


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

