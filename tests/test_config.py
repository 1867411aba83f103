import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from visual_lps.agents import AGENTS
from visual_lps.config import TrainConfig, field_docs, save_run_config
from visual_lps.tasks import CONFIG_DIR, TASKS
from visual_lps.training.flags import parse_args


@pytest.mark.parametrize("cls", [TrainConfig, *{entry.config for entry in AGENTS.values()}])
def test_every_config_field_has_a_docstring(cls):
    docs = field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == []


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_configs_name_real_fields_and_comment_each_one(path: Path):
    content = yaml.safe_load(path.read_text())
    assert set(content) == {"train", "agent"}
    assert set(content["train"]) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(content["agent"]) <= {f.name for f in dataclasses.fields(AGENTS["lps"].config)}
    for line in path.read_text().splitlines():
        if re.match(r"\s+\w+:\s*\S", line):
            assert "#" in line, f"{path.name}: field without a comment: {line.strip()}"


def test_a_task_file_gives_each_agent_the_fields_it_has(tmp_path: Path, monkeypatch):
    _, qc_fql = parse_args(["--task", "cube-single", "--agent", "qc-fql", "--out", str(tmp_path / "a")])
    assert qc_fql.onestep_hidden_dims == (512, 512, 512, 512)  # the file's actor_hidden_dims are LPS's latent actor's
    assert qc_fql.critic_hidden_dims == (256, 256, 256, 256) and qc_fql.alpha == 30.0
    _, flow_bc = parse_args(["--task", "cube-single", "--agent", "flow-bc", "--out", str(tmp_path / "b")])
    assert not hasattr(flow_bc, "critic_hidden_dims") and flow_bc.bc_flow_hidden_dims == (512, 512, 512, 512)
    _, dsrl = parse_args(["--task", "cube-single", "--agent", "dsrl", "--out", str(tmp_path / "d")])
    assert dsrl.prior == "flow" and dsrl.actor_hidden_dims == (512, 512, 512, 512)  # not LPS's latent actor's
    families = tmp_path / "configs"
    families.mkdir()
    (families / "visual.yaml").write_text("train: {}\nagent:\n  critic_hiden_dims: [8]\n")
    monkeypatch.setattr("visual_lps.tasks.CONFIG_DIR", families)
    with pytest.raises(SystemExit, match=r"visual.yaml: unknown agent field\(s\) \['critic_hiden_dims'\]; no agent has"):
        parse_args(["--task", "visual-cube", "--agent", "flow-bc", "--out", str(tmp_path / "c")])


def test_every_task_file_named_exists_and_differs_from_the_defaults():
    """A task file holds only what the task changes: one that repeated the dataclass defaults would go stale."""
    paths = {task.config_path for task in TASKS.values()} - {None}
    assert {path.name for path in paths} == {"visual.yaml", "robot.yaml"}
    for path in paths:
        content = yaml.safe_load(path.read_text())
        assert all(getattr(TrainConfig(), k) != v for k, v in content["train"].items()), path
        defaults = AGENTS["lps"].config()
        assert all(getattr(defaults, k) != v for k, v in content["agent"].items()), path


def test_flags_override_yaml_and_defaults():
    train, agent = parse_args(["--task", "scene", "--horizon", "10", "--prior-hidden-dims", "64,64",
                               "--no-progress", "--batch-size", "32"])
    assert (train.task, train.batch_size, train.progress) == ("scene", 32, False)
    assert (agent.horizon, agent.prior_hidden_dims) == (10, (64, 64))
    assert agent.critic_hidden_dims == (256, 256, 256, 256)  # the dataclass default (scene has no file)
    assert train.out == "runs/scene-task1-lps-s0"


def test_unknown_task_is_one_error_line():
    with pytest.raises(SystemExit, match="^error: unknown --task 'cube-triple'.*cube-single"):
        parse_args(["--task", "cube-triple"])


def test_resume_without_a_run_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="no run to resume"):
        parse_args(["--resume", "--out", str(tmp_path / "nothing")])


@pytest.mark.parametrize("flag, value, allowed", [
    ("--task-id", "6", "must be 1..5"),
    ("--batch-size", "0", "must be at least 1"),
    ("--keep-last", "-1", "must be at least 0 (0 keeps all)"),
    ("--mixed-precision", "fp16", "must be no or bf16"),
    ("--data-on", "gpu", "must be auto or device or host"),
    ("--horizon", "0", "must be at least 1"),
    ("--frame-stack", "0", "must be at least 1"),
    ("--discount", "1.5", "must be in (0, 1]"),
    ("--lr", "-0.001", "must be positive"),
    ("--augment-prob", "2.5", "must be in [0, 1]"),
    ("--prior-hidden-dims", "64,0", "must be widths of at least 1"),
    ("--flow-ratio", "1.5", "must be in [0, 1]"),
])
def test_out_of_range_flags_are_named_with_their_own_range(flag: str, value: str, allowed: str):
    with pytest.raises(SystemExit) as error:
        parse_args([flag, value])
    assert str(error.value) == f"error: {flag} {value}: out of range, {allowed}"


@pytest.mark.parametrize("name, processes, machines", [("single_gpu", 1, 1), ("multi_gpu", 8, 1), ("multi_node", 16, 2)])
def test_accelerate_configs_load(name: str, processes: int, machines: int):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(CONFIG_DIR / "accelerate" / f"{name}.yaml"))
    assert (config.num_processes, config.num_machines, config.use_cpu) == (processes, machines, False)


def test_processes_that_form_no_group_are_refused(tiny_cube_dir, tmp_path):
    """A config with use_cpu: true starts N processes that each believe they are alone."""
    config = tmp_path / "cpu.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\n"
                      "num_processes: 2\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    result = subprocess.run([accelerate, "launch", "--config_file", str(config), "train.py", "--task", "cube-single",
                             "--dataset-dir", str(tiny_cube_dir), "--out", str(tmp_path / "run"), "--steps", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, says", [
    ("--lr", "abc", "argument --lr: invalid float value: 'abc'"),
    ("--steps", "1e3x", "argument --steps: invalid int value: '1e3x'"),
    ("--prior-hidden-dims", "a,b", "argument --prior-hidden-dims: invalid comma-separated int list value: 'a,b'"),
])
def test_values_of_the_wrong_type_name_the_flag_and_the_type(flag: str, value: str, says: str, capsys):
    with pytest.raises(SystemExit) as error:
        parse_args([flag, value])
    assert error.value.code == 2 and says in capsys.readouterr().err


def test_out_must_be_a_folder_and_an_existing_run_is_never_silently_replaced(tmp_path: Path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(SystemExit, match="--out .*notes.txt is a file, not a run folder"):
        parse_args(["--out", str(a_file)])
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"train": {}, "agent": {}}))
    with pytest.raises(SystemExit, match="already holds a run \\(config.yaml, checkpoints\\).*--resume.*--overwrite"):
        parse_args(["--out", str(run)])
    train, _ = parse_args(["--out", str(run), "--overwrite"])
    assert train.overwrite
    with pytest.raises(SystemExit, match="give one"):
        parse_args(["--out", str(run), "--overwrite", "--resume"])
    assert a_file.read_text() == "mine" and (run / "checkpoints").is_dir()  # nothing touched by refusing


def test_resume_refuses_flags_that_change_what_the_run_learns_and_accepts_the_others(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    train, agent = parse_args(["--task", "cube-single", "--out", str(run), "--no-progress"])
    save_run_config(run / "config.yaml", train, agent)
    with pytest.raises(SystemExit) as error:
        parse_args(["--resume", "--out", str(run), "--lr", "0.1", "--horizon", "10", "--task-id", "2", "--seed", "3",
                    "--prior-hidden-dims", "64,64", "--steps", "10"])
    message = str(error.value)
    for expected in ("--lr 0.1 (the run has 0.0003)", "--horizon 10 (the run has 5)", "--task-id 2 (the run has 1)",
                     "--seed 3 (the run has 0)", "--prior-hidden-dims 64,64 (the run has 512,512,512,512)"):
        assert expected in message
    assert "--steps" not in message
    resumed, agent = parse_args(["--resume", "--out", str(run), "--steps", "10", "--keep-last", "2", "--seed", "0",
                                 "--no-compile", "--eval-every", "5", "--no-tf32"])
    assert (resumed.steps, resumed.keep_last, resumed.eval_every, resumed.compile) == (10, 2, 5, False)
    assert not resumed.tf32
    assert agent.lr == 3e-4



def test_keep_last_help_says_what_the_default_keeps(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--keep-last KEEP_LAST keep only the newest this many checkpoints; 0 keeps every one" in help_text
    assert "warns at start when they will not fit the free disk) (default: 0)" in help_text
