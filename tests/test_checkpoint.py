from pathlib import Path

import torch

from visual_lps.checkpoint import checkpoints, latest_checkpoint, rotate_checkpoints, weights_digest


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
