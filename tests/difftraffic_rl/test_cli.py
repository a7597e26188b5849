"""The difftraffic-rl command: train with overrides, eval, plot, resume, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from difftraffic_rl.cli import main


def _train(tmp_path: Path, *extra: str) -> Path:
    args = [
        "train",
        "--task",
        "dejong",
        "--algo",
        "ppo",
        "--seed",
        "0",
        "--epochs",
        "3",
        "--logdir",
        str(tmp_path),
        "--no-progress",
        *extra,
    ]
    assert main(args) == 0
    (run_dir,) = tmp_path.iterdir()
    return run_dir


def test_train_writes_config_csv_tensorboard_and_checkpoint(tmp_path: Path) -> None:
    run_dir = _train(tmp_path, "--set", "actor_lr=3e-4", "--set", "train.checkpoint_every=2")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["hyperparameters"]["actor_lr"] == 3e-4
    assert config["train"]["seed"] == 0 and config["train"]["epochs"] == 3
    lines = (run_dir / "progress.csv").read_text().splitlines()
    assert len(lines) == 4 and "reward_smoothed" in lines[0] and "env_steps" in lines[0]
    assert any((run_dir / "tb").iterdir())
    assert (run_dir / "checkpoints" / "checkpoint.pt").exists()
    assert not list((run_dir / "checkpoints").glob("*.tmp"))


def test_eval_prints_both_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = _train(tmp_path)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {
        "episodes",
        "deterministic_mean",
        "deterministic_std",
        "stochastic_mean",
        "stochastic_std",
    }
    assert report["episodes"] == 8


def test_plot_writes_an_image(tmp_path: Path) -> None:
    run_dir = _train(tmp_path / "runs")
    out = tmp_path / "curves.png"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_of_a_finished_run_adds_nothing(tmp_path: Path) -> None:
    run_dir = _train(tmp_path)
    before = (run_dir / "progress.csv").read_text()
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "progress.csv").read_text() == before


def test_bad_override_is_an_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--task",
            "dejong",
            "--algo",
            "ppo",
            "--logdir",
            str(tmp_path),
            "--set",
            "nonsense=1",
            "--no-progress",
        ]
    )
    assert code == 2
    assert "nonsense" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_before_the_first_episode_ends_the_bar_and_last_line_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Cartpole episodes last 240 steps: two epochs of horizon 4 finish none.
    assert (
        main(
            [
                "train",
                "--task",
                "cartpole",
                "--algo",
                "ppo",
                "--epochs",
                "2",
                "--logdir",
                str(tmp_path),
                "--set",
                "num_envs=2",
                "--set",
                "horizon=4",
                "--set",
                "train.tensorboard=false",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "no episode finished yet" in captured.err and "nan" not in captured.err
    assert "final smoothed reward: no episode finished yet (epoch 2)" in captured.out
    (run_dir,) = tmp_path.iterdir()
    with (run_dir / "progress.csv").open() as handle:
        assert [row["reward_smoothed"] for row in csv.DictReader(handle)] == ["nan", "nan"]


def test_resume_with_more_epochs_trains_them_and_records_the_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _train(tmp_path)
    assert main(["train", "--resume", str(run_dir), "--epochs", "5", "--no-progress"]) == 0
    assert "(epoch 5)" in capsys.readouterr().out
    assert len((run_dir / "progress.csv").read_text().splitlines()) == 1 + 5
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "ackley"], "--task ackley conflicts with task dejong"),
        (["--algo", "gippo"], "--algo gippo conflicts with algo ppo"),
        (["--seed", "1"], "train.seed cannot change"),
        (["--set", "critic_hidden=[8]"], "hyperparameters.critic_hidden cannot change"),
        (["--logdir", "elsewhere"], "--logdir does not apply to --resume"),
    ],
)
def test_resume_that_would_change_the_run_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    run_dir = _train(tmp_path)
    before = (run_dir / "progress.csv").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--epochs", "5", "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err
    assert (run_dir / "progress.csv").read_text() == before


def test_resume_accepts_the_runs_own_names_and_harmless_settings(tmp_path: Path) -> None:
    run_dir = _train(tmp_path, "--set", "train.tensorboard=false")
    assert (
        main(
            [
                "train",
                "--resume",
                str(run_dir),
                "--task",
                "dejong",
                "--algo",
                "ppo",
                "--seed",
                "0",
                "--epochs",
                "4",
                "--set",
                "train.tensorboard=true",
                "--no-progress",
            ]
        )
        == 0
    )
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["tensorboard"] is True
    assert any((run_dir / "tb").iterdir())


class _Payload:
    """Unpickling this would create ``path``: a stand-in for code hidden in a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "not_ours"])
def test_a_damaged_or_foreign_checkpoint_is_one_line_naming_the_file(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    run_dir = _train(tmp_path / "runs", "--set", "train.epochs=3")
    checkpoint = run_dir / "checkpoints" / "checkpoint.pt"
    marker = tmp_path / "code_ran"
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:3000])
    elif damage == "garbage":
        checkpoint.write_bytes(b"not a checkpoint")
    elif damage == "foreign":
        torch.save({"epoch": _Payload(marker)}, checkpoint)
    else:
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--epochs", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(checkpoint) in err
    expected = {
        "truncated": "corrupted or truncated",
        "garbage": "corrupted or truncated",
        "foreign": "refused without running them",
        "not_ours": "not a difftraffic_rl checkpoint (missing",
    }[damage]
    assert expected in err
    assert not marker.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "RUN", "--episodes", "0"], "episodes=0 is invalid; valid range: >= 1"),
        (["eval", "RUN", "--episodes", "-3"], "episodes=-3 is invalid; valid range: >= 1"),
        (["eval", "MISSING"], "no checkpoint at MISSING"),
        (["export", "MISSING"], "checkpoint MISSING"),
        (["plot", "MISSING", "--out", "OUT"], "MISSING"),
        (
            ["train", "--task", "dejong", "--algo", "ppo", "--logdir", "/proc/no/such/dir"],
            "logdir /proc/no/such/dir cannot be created",
        ),
        (
            ["train", "--task", "dejong", "--algo", "ppo", "--set", "train.num_envs=2.7"],
            "train.num_envs=2.7 is not an integer",
        ),
        (
            ["train", "--task", "dejong", "--algo", "ppo", "--set", "task_kwargs.lanes=2"],
            "task 'dejong' has no setting ['lanes'] (task_kwargs)",
        ),
        (
            [
                "train",
                "--task",
                "dejong",
                "--algo",
                "ppo",
                "--device",
                "cuda:99",
                "--logdir",
                "OUT",
            ],
            "train.device='cuda:99' is not a usable torch device here",
        ),
    ],
)
def test_every_command_reports_bad_input_in_one_line_with_status_2(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _train(tmp_path / "runs") if "RUN" in argv else tmp_path / "RUN"
    names = {
        "RUN": str(run_dir),
        "MISSING": str(tmp_path / "missing"),
        "OUT": str(tmp_path / "c.png"),
    }
    capsys.readouterr()
    status = main([names.get(a, a) for a in argv])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("difftraffic-rl: error: ")
    assert len(captured.err.strip().splitlines()) == 1
    for placeholder, value in names.items():
        message = message.replace(placeholder, value)
    assert message in captured.err
    assert not (tmp_path / "c.png").exists()  # a failed train leaves no run directory behind


def test_train_config_starts_from_a_users_yaml(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "dejong",
                "algo": "ppo",
                "train": {"epochs": 2},
                "hyperparameters": {"horizon": 2},
            }
        )
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--logdir",
                str(tmp_path / "runs"),
                "--no-progress",
                "--set",
                "train.tensorboard=false",
            ]
        )
        == 0
    )
    (run_dir,) = (tmp_path / "runs").iterdir()
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["train"]["epochs"] == 2 and written["hyperparameters"]["horizon"] == 2
    # Settings the file does not name keep the dataclass defaults, not the shipped YAML's.
    from difftraffic_rl.algorithms import PPOConfig
    from difftraffic_rl.training import CHECKPOINT, load_algorithm

    assert written["hyperparameters"]["actor_lr"] == PPOConfig().actor_lr  # the run records all
    assert load_algorithm(run_dir / CHECKPOINT).config.actor_lr == PPOConfig().actor_lr


def test_train_config_that_names_another_task_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"task": "dejong", "algo": "ppo"}))
    assert main(["train", "--config", str(config), "--task", "ackley", "--no-progress"]) == 2
    assert "the configuration's task 'dejong' conflicts with 'ackley'" in capsys.readouterr().err


def test_list_reads_the_registries_with_one_line_descriptions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from difftraffic_rl.algorithms import ALGORITHMS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, cls in ALGORITHMS.items():
        assert f"{name:16s} {cls.label}: {cls.description}" in out and cls.description
    assert "pacecar-2lane" in out and "paper 7.5.2" in out


def test_train_name_sets_the_run_directory(tmp_path: Path) -> None:
    argv = ["train", "--task", "dejong", "--algo", "ppo", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--logdir", str(tmp_path), "--name", "mine"]) == 0
    assert (tmp_path / "mine" / "checkpoints" / "checkpoint.pt").is_file()


def _logged_run(root: Path, task: str, algo: str, seed: int, final: float) -> Path:
    run = root / f"{task}_{algo}_s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump({"task": task, "algo": algo, "train": {"seed": seed}})
    )
    (run / "progress.csv").write_text(
        "epoch,env_steps,wall_time,cpu_time,reward_smoothed\n"
        f"1,64,0.1,0.1,{final - 1}\n2,128,0.2,0.2,{final}\n"
    )
    return run


def test_report_writes_the_rliable_report_of_run_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        _logged_run(
            tmp_path / "runs", task, algo, seed, base + seed + (3 if algo == "gippo" else 0)
        )
        for task, base in (("dejong", -10.0), ("ackley", -30.0))
        for algo in ("gippo", "ppo")
        for seed in (1, 2)
    ]
    out = tmp_path / "out" / "report.md"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    assert "| GI-PPO > PPO | 2 | 1 [1, 1] |" in out.read_text()
    assert (tmp_path / "out" / "report_profiles.png").is_file()
    assert f"written: {out}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"difftraffic-rl: error: {tmp_path / 'out'} is not a run directory (it has no config.yaml)"
    )
