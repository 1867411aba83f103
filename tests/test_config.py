import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from visual_lps.agents import AGENTS
from visual_lps.config import TrainConfig, field_docs
from visual_lps.tasks import CONFIG_DIR, TASKS
from visual_lps.trainer import parse_args


@pytest.mark.parametrize("cls", [TrainConfig, *{cfg for cfg, _ in AGENTS.values()}])
def test_every_config_field_has_a_docstring(cls):
    docs = field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == []


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_configs_name_real_fields_and_comment_each_one(path: Path):
    content = yaml.safe_load(path.read_text())
    assert set(content) == {"train", "agent"}
    assert set(content["train"]) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(content["agent"]) <= {f.name for f in dataclasses.fields(AGENTS["lps"][0])}
    for line in path.read_text().splitlines():
        if re.match(r"\s+\w+:\s*\S", line):
            assert "#" in line, f"{path.name}: field without a comment: {line.strip()}"


def test_every_task_has_its_family_config():
    assert all(task.config_path.exists() for task in TASKS.values())


def test_flags_override_yaml_and_defaults():
    train, agent = parse_args(["--task", "scene", "--horizon", "10", "--prior-hidden-dims", "64,64",
                               "--no-progress", "--batch-size", "32"])
    assert (train.task, train.batch_size, train.progress) == ("scene", 32, False)
    assert (agent.horizon, agent.prior_hidden_dims) == (10, (64, 64))
    assert agent.critic_hidden_dims == (256, 256, 256, 256)  # from configs/scene.yaml, as a tuple
    assert train.out == "runs/scene-task1-lps-s0"


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown --task 'cube-triple'.*cube-single"):
        parse_args(["--task", "cube-triple"])


def test_resume_without_a_run_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="no run to resume"):
        parse_args(["--resume", "--out", str(tmp_path / "nothing")])


def test_out_of_range_flags_are_named():
    with pytest.raises(SystemExit, match="--task-id 6"):
        parse_args(["--task-id", "6"])
    with pytest.raises(SystemExit, match="--batch-size 0"):
        parse_args(["--batch-size", "0"])
