"""Writing checkpoints (visual_lps.training.checkpointing): rotation, weight digests across processes, the free-disk
warning, and the training state a resume restores (tensors, never pickles of code)."""

import shutil
from pathlib import Path

import torch

from tests.runs.test_checkpoints import make_run
from visual_lps.runs.checkpoints import checkpoints
from visual_lps.training.checkpointing import (
    load_training_state,
    rotate_checkpoints,
    save_training_state,
    space_warning,
    weights_digest,
)


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


def test_a_warning_when_the_checkpoints_kept_will_not_fit_the_free_disk(tmp_path: Path):
    each = int(shutil.disk_usage(tmp_path).free / 10.5)  # 10 fit, 11 do not
    assert space_warning(tmp_path, each, 0, 1000, 100, keep_last=0) is None
    warning = space_warning(tmp_path, each, 0, 1050, 100, keep_last=0)  # 11: one every 100 steps and the last
    assert warning.startswith("warning: the 11 checkpoints this run will keep") and "--keep-last" in warning
    assert space_warning(tmp_path, each, 0, 1050, 100, keep_last=3) is None
    assert space_warning(tmp_path, each, 500, 1500, 100, keep_last=0) is None  # resumed at 500: 10 more


def test_the_training_state_is_tensors_that_set_every_processs_generator(tmp_path: Path):
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2, 3)]
    save_training_state(tmp_path / "training_state.safetensors", 7, [g.get_state() for g in generators])
    step, states = load_training_state(tmp_path)
    assert step == 7 and len(states) == 3
    for state, original in zip(states, generators):
        restored = torch.Generator()
        restored.set_state(state)
        assert torch.equal(torch.rand(4, generator=restored), torch.rand(4, generator=original))


def test_a_checkpoint_from_before_the_training_state_file_resumes_from_its_pickles_read_as_data(tmp_path: Path):
    generator = torch.Generator().manual_seed(5)
    torch.save({"step": 4}, tmp_path / "custom_checkpoint_0.pkl")
    torch.save({"generators": [generator.get_state()]}, tmp_path / "custom_checkpoint_1.pkl")
    step, states = load_training_state(tmp_path)
    assert step == 4 and torch.equal(states[0], generator.get_state())
