"""Training loop: determinism, exact resume after a kill, reward floors, evaluation, config."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import difftraffic_rl
from difftraffic_rl.config import RunConfig, apply_overrides, default_config
from difftraffic_rl.tasks.function_optimization import dejong
from difftraffic_rl.training import RewardMeter, TrainResult, evaluate, resume

ALGOS = ["lr", "rp", "lrp", "ppo", "gippo"]
TIMINGS = ("wall_time", "cpu_time")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        del row["wall_time"], row["cpu_time"]
    return rows


def _dejong_run(
    logdir: Path,
    epochs: int,
    overrides: list[str],
    algo: str = "ppo",
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """A De Jong run of seed 3 (seconds), as the resume tests need one."""
    return difftraffic_rl.train(
        "dejong",
        algo,
        seed=3,
        epochs=epochs,
        logdir=logdir,
        overrides=overrides,
        progress=False,
        callback=callback,
    )


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_gives_the_same_curve_and_another_seed_does_not(algo: str) -> None:
    def curve(seed: int) -> list[dict[str, float]]:
        result = difftraffic_rl.train(
            "dejong", algo, seed=seed, epochs=8, logdir=None, progress=False
        )
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in result.metrics]

    first, second = curve(0), curve(0)
    assert first == second
    assert [r["reward"] for r in curve(1)] != [r["reward"] for r in first]


class KilledError(Exception):
    pass


ADAPTIVE = ["hyperparameters.lr_schedule=adaptive", "hyperparameters.lr_carryover=none"]


@pytest.mark.parametrize(
    ("algo", "extra"),
    [
        ("gippo", []),
        ("ppo", []),
        ("lrp", []),
        ("ppo", [*ADAPTIVE, "hyperparameters.kl_target=1e-6"]),
        ("gippo", [*ADAPTIVE, "hyperparameters.kl_target=1e-6"]),
    ],
    ids=["gippo", "ppo", "lrp", "ppo-adaptive", "gippo-adaptive"],
)
def test_resume_after_a_kill_reproduces_the_uninterrupted_curve(
    algo: str, extra: list[str], tmp_path: Path
) -> None:
    settings = ["train.checkpoint_every=7", "train.tensorboard=false", *extra]
    full = _dejong_run(tmp_path / "full", 20, settings, algo)

    def kill_after_epoch_11(row: dict[str, float]) -> None:
        if row["epoch"] == 11:
            raise KilledError

    with pytest.raises(KilledError):
        _dejong_run(tmp_path / "killed", 20, settings, algo, kill_after_epoch_11)
    (killed_dir,) = (tmp_path / "killed").iterdir()
    assert len(_rows(killed_dir)) == 11  # epochs 8-11 were logged after the last checkpoint
    resumed = resume(killed_dir, progress=False)
    assert [int(r["epoch"]) for r in resumed.metrics] == list(range(8, 21))
    assert _rows(killed_dir) == _rows(full.run_dir)  # the logged rates and KLs included
    for a, b in zip(
        resumed.algorithm.actor.parameters(), full.algorithm.actor.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    if extra:
        rates = [float(r["charts/actor_lr"]) for r in _rows(full.run_dir)]
        assert len(set(rates)) > 1  # the rate did adapt, so the resume had one to restore
        assert resumed.algorithm.adaptive_lr == full.algorithm.adaptive_lr


@pytest.mark.parametrize("algo", ["ppo", "gippo"])
@pytest.mark.parametrize(("kl_target", "direction"), [(1e-12, "down"), (1e3, "up")])
def test_adaptive_rate_reacts_to_the_kl_of_each_update(
    algo: str, kl_target: float, direction: str
) -> None:
    result = difftraffic_rl.train(
        "dejong",
        algo,
        seed=1,
        epochs=6,
        logdir=None,
        progress=False,
        overrides=[*ADAPTIVE, f"hyperparameters.kl_target={kl_target}"],
    )
    rows = result.metrics
    rates = [r["charts/actor_lr"] for r in rows]
    assert rates[0] == 1e-4  # the configured actor_lr starts the schedule
    for row, rate, next_rate in zip(rows, rates, rates[1:], strict=False):
        start = rate if row["ppo/tries"] == 1 else rate / 1.5  # a back-off lowers it once
        if direction == "down":  # every update's KL is far above 2 * kl_target
            assert row["ppo/kl"] > 2 * kl_target
            assert next_rate == pytest.approx(max(start / 1.5, 1e-6))
        else:  # and far below kl_target / 2
            assert next_rate == pytest.approx(min(start * 1.5, 1e-2))
    assert (rates[-1] < rates[0]) if direction == "down" else (rates[-1] > rates[0])


@pytest.mark.parametrize(
    ("algo", "floor"),
    [("lr", -0.1), ("rp", -0.01), ("lrp", -0.01), ("ppo", -0.1), ("gippo", -0.01)],
)
def test_short_learning_run_reaches_a_reward_floor_on_dejong_1d(algo: str, floor: float) -> None:
    result = difftraffic_rl.train("dejong", algo, seed=1, epochs=100, logdir=None, progress=False)
    start, end = result.metrics[0]["reward_smoothed"], result.metrics[-1]["reward_smoothed"]
    assert start < -5  # a random policy on [-5.12, 5.12]
    assert end > floor


@pytest.mark.slow
@pytest.mark.parametrize("task", ["dejong", "ackley"])
def test_gippo_beats_ppo_at_600_epochs(task: str) -> None:
    def best(algo: str) -> float:
        result = difftraffic_rl.train(task, algo, seed=1, epochs=600, logdir=None, progress=False)
        return max(r["reward_smoothed"] for r in result.metrics)

    assert best("gippo") > best("ppo")


def test_evaluate_deterministic_return_is_the_mean_action_reward(tmp_path: Path) -> None:
    result = difftraffic_rl.train(
        "dejong",
        "gippo",
        seed=2,
        epochs=30,
        logdir=tmp_path,
        overrides=["train.tensorboard=false"],
        progress=False,
    )
    report = evaluate(result.run_dir, episodes=16, seed=5)
    mean, _ = result.algorithm.actor(result.algorithm.normalize_obs(torch.zeros(1, 1)))
    expected = -dejong(5.12 * torch.tanh(mean.detach())).item()
    assert report["deterministic_mean"] == pytest.approx(expected, rel=2e-3)  # float32 sums
    # every world drives the same mean action; the batched float32 network may round its rows
    # differently in the last bits (SIMD lanes against the remainder: one float32 ulp of std on
    # some CPUs), never by more than a few ulps
    resolution = 8 * torch.finfo(torch.float32).eps * abs(report["deterministic_mean"])
    assert report["deterministic_std"] <= resolution
    assert report["stochastic_std"] > 1e3 * resolution
    assert report == evaluate(result.run_dir, episodes=16, seed=5)


def test_reward_meter_follows_the_authors_running_mean() -> None:
    meter = RewardMeter(window=100)
    meter.update(torch.full((64,), -10.0))
    assert meter.update(torch.full((64,), -1.0)) == pytest.approx(0.36 * -10 + 0.64 * -1)
    assert meter.update(torch.empty(0)) == pytest.approx(0.36 * -10 + 0.64 * -1)


def test_overrides_are_typed_and_bad_keys_name_the_valid_ones() -> None:
    values = apply_overrides(
        default_config("dejong64", "gippo"),
        ["actor_lr=3e-4", "train.epochs=7", "actor_hidden=[8, 8]"],
    )
    assert values["hyperparameters"]["actor_lr"] == 3e-4
    assert values["train"]["epochs"] == 7
    assert values["hyperparameters"]["actor_hidden"] == [8, 8]
    with pytest.raises(ValueError, match="no field 'alpha_zero'"):
        apply_overrides(default_config("dejong", "gippo"), ["hyperparameters.alpha_zero=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(default_config("dejong", "gippo"), ["actor_lr"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.num_envs=2.7", r"train.num_envs=2.7 is not an integer"),
        ("tensorboard=maybe", r"tensorboard='maybe' is not a boolean; valid: true, false"),
        ("actor_lr=abc", r"actor_lr='abc' is not a number"),
        ("train.seed=true", r"train.seed=True is not an integer"),
        ("actor_hidden=64", r"actor_hidden=64 is not a list"),
        ("train.device=3", r"train.device=3 is not a string"),
        ("train.num_envs=[1", r"override 'train.num_envs=\[1': the value is not valid YAML"),
    ],
)
def test_an_override_is_never_converted_with_a_loss(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_overrides(default_config("dejong", "gippo"), [override])


def test_whole_numbers_written_as_floats_are_accepted_for_integers() -> None:
    values = apply_overrides(default_config("dejong", "gippo"), ["train.epochs=1e3"])
    assert values["train"]["epochs"] == 1000 and isinstance(values["train"]["epochs"], int)


@pytest.mark.parametrize("task", ["dejong", "dejong64", "ackley", "ackley64"])
@pytest.mark.parametrize("algo", ALGOS)
def test_shipped_configs_hold_the_paper_learning_rates(task: str, algo: str) -> None:
    table = {
        "dejong": {"lr": 1e-3, "rp": 1e-2, "lrp": 1e-2, "ppo": 1e-4, "gippo": 1e-4},
        "dejong64": {"lr": 1e-3, "rp": 1e-2, "lrp": 1e-3, "ppo": 1e-2, "gippo": 1e-2},
        "ackley": {"lr": 1e-4, "rp": 1e-3, "lrp": 1e-4, "ppo": 1e-4, "gippo": 1e-4},
        "ackley64": {"lr": 3e-4, "rp": 1e-3, "lrp": 3e-4, "ppo": 1e-2, "gippo": 1e-2},
    }
    values = RunConfig.from_dict(default_config(task, algo)).resolved()
    assert (values["task"], values["algo"]) == (task, algo)
    hp = values["hyperparameters"]
    assert hp["actor_lr"] == table[task][algo]
    assert (hp["horizon"], hp["gamma"], hp["gae_lambda"], hp["critic_lr"]) == (1, 0.99, 0.95, 1e-3)
    assert values["train"]["num_envs"] == 64 and values["train"]["epochs"] == 2000
    if algo == "gippo":
        assert (
            hp["alpha0"],
            hp["alpha_factor"],
            hp["det_interval"],
            hp["max_oorr"],
            hp["alpha_lr"],
        ) == (1e-5, 1.1, 0.4, 0.5, 1e-3)


def test_import_is_cheap() -> None:
    code = "import sys, difftraffic_rl; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_checkpoint_rebuilds_the_policy_on_its_own(tmp_path: Path) -> None:
    from difftraffic_rl.training import load_algorithm

    result = difftraffic_rl.train(
        "dejong64",
        "gippo",
        seed=4,
        epochs=3,
        logdir=tmp_path,
        overrides=["train.tensorboard=false"],
        progress=False,
    )
    rebuilt = load_algorithm(result.run_dir / "checkpoints" / "checkpoint.pt")
    obs = torch.zeros(5, 1)
    assert torch.equal(rebuilt.act(obs), result.algorithm.act(obs))
    assert rebuilt.alpha == result.algorithm.alpha


def test_resume_drops_log_rows_that_do_not_fit_the_header(tmp_path: Path) -> None:
    settings = ["train.checkpoint_every=5", "train.tensorboard=false"]
    full = _dejong_run(tmp_path / "full", 10, settings)

    def kill_after_epoch_7(row: dict[str, float]) -> None:
        if row["epoch"] == 7:
            raise KilledError

    with pytest.raises(KilledError):
        _dejong_run(tmp_path / "killed", 10, settings, callback=kill_after_epoch_7)
    (killed_dir,) = (tmp_path / "killed").iterdir()
    log = killed_dir / "progress.csv"
    lines = log.read_text().splitlines()
    lines[3] += ",0.5"  # epoch 3 written by a version that logged one more column
    lines[-1] = lines[-1][:10]  # epoch 7's line, torn by the kill
    log.write_text("\n".join(lines))
    resume(killed_dir, progress=False)
    expected = [row for row in _rows(full.run_dir) if row["epoch"] != "3.0"]
    assert _rows(killed_dir) == expected


CONSTANT = ["hyperparameters.lr_schedule=constant", "hyperparameters.critic_lr_schedule=constant"]


@pytest.mark.parametrize("schedules", ["constant", "linear"])
def test_resume_with_more_epochs_extends_a_finished_run(schedules: str, tmp_path: Path) -> None:
    settings = ["train.tensorboard=false", *(CONSTANT if schedules == "constant" else [])]
    short = _dejong_run(tmp_path / "short", 5, settings)
    before = _rows(short.run_dir)
    extended = resume(short.run_dir, progress=False, epochs=8)
    assert [int(r["epoch"]) for r in extended.metrics] == [6, 7, 8]
    assert _rows(short.run_dir)[:5] == before
    assert yaml.safe_load((short.run_dir / "config.yaml").read_text())["train"]["epochs"] == 8
    state = torch.load(short.run_dir / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 8 and state["config"]["train"]["epochs"] == 8
    long = _dejong_run(tmp_path / "long", 8, settings)
    if schedules == "constant":  # the total enters only through the schedules
        assert _rows(short.run_dir) == _rows(long.run_dir)
    else:  # the first 5 epochs decayed the critic's rate over 5 epochs, not 8
        rates = [[r["charts/critic_lr"] for r in _rows(d)] for d in (short.run_dir, long.run_dir)]
        assert rates[0][:5] != rates[1][:5] and rates[0][5:] == rates[1][5:]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.num_envs=32", "train.num_envs"),
        ("train.seed=4", "train.seed"),
        ("train.dtype=float64", "train.dtype"),
        ("train.reward_window=10", "train.reward_window"),
        ("actor_hidden=[8, 8]", "hyperparameters.actor_hidden"),
        ("actor_lr=1.0", "hyperparameters.actor_lr"),
        ("task_kwargs.dim=2", "task_kwargs.dim"),
    ],
)
def test_resume_refuses_a_setting_its_checkpoint_depends_on(
    override: str, key: str, tmp_path: Path
) -> None:
    run_dir = _dejong_run(tmp_path, 2, ["train.tensorboard=false"]).run_dir
    config, log = (run_dir / "config.yaml").read_text(), (run_dir / "progress.csv").read_text()
    with pytest.raises(ValueError, match=rf"^{re.escape(key)} cannot change"):
        resume(run_dir, progress=False, epochs=4, overrides=[override])
    assert (run_dir / "config.yaml").read_text() == config
    assert (run_dir / "progress.csv").read_text() == log
    resume(run_dir, progress=False, overrides=["train.seed=3"])  # the run's own value is fine


def test_resume_applies_the_settings_that_do_not_change_the_run(tmp_path: Path) -> None:
    run_dir = _dejong_run(tmp_path, 2, ["train.tensorboard=false"]).run_dir
    assert not (run_dir / "tb").exists()
    resume(
        run_dir,
        progress=False,
        epochs=3,
        overrides=["tensorboard=true", "train.checkpoint_every=7"],
    )
    assert any((run_dir / "tb").iterdir())
    train_settings = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]
    assert (train_settings["tensorboard"], train_settings["checkpoint_every"]) == (True, 7)
    with pytest.raises(ValueError, match="train.epochs=2 is below the 3 epochs"):
        resume(run_dir, progress=False, epochs=2)


def test_kill_9_at_the_default_settings_loses_at_most_the_epoch_in_progress(
    tmp_path: Path,
) -> None:
    import os
    import signal
    import time

    from difftraffic_rl.training import CHECKPOINT, load_checkpoint

    epochs = 100_000  # far more than the run gets to train before the kill
    command = [
        sys.executable,
        "-m",
        "difftraffic_rl",
        "train",
        "--task",
        "dejong",
        "--algo",
        "ppo",
        "--seed",
        "3",
        "--epochs",
        str(epochs),
        "--logdir",
        str(tmp_path / "killed"),
        "--no-progress",
        "--set",
        "train.tensorboard=false",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    log: Path | None = None
    while time.monotonic() < deadline:
        logs = list((tmp_path / "killed").glob("*/progress.csv"))
        if logs and len(logs[0].read_text().splitlines()) > 40:
            log = logs[0]
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert log is not None, "the run logged 40 epochs within 120 s"
    with log.open(newline="") as handle:
        header, *lines = list(csv.reader(handle))
    assert all(len(line) == len(header) for line in lines)  # no torn line
    logged = int(float(lines[-1][header.index("epoch")]))
    saved = load_checkpoint(log.parent / CHECKPOINT)["epoch"]
    assert logged - saved <= 1

    resumed = resume(log.parent, progress=False, stop_after=logged + 3 - saved)
    with pytest.raises(KilledError):
        _dejong_run(
            tmp_path / "full",
            epochs,
            ["train.tensorboard=false"],
            "ppo",
            callback=lambda row: _stop_at(row, logged + 3),
        )
    (full_dir,) = (tmp_path / "full").iterdir()
    assert int(resumed.metrics[-1]["epoch"]) == logged + 3
    assert _rows(log.parent) == _rows(full_dir)


def _stop_at(row: dict[str, float], epoch: int) -> None:
    if row["epoch"] == epoch:
        raise KilledError


def test_training_leaves_the_callers_thread_count_and_loading_builds_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import difftraffic_rl.training as training
    from difftraffic_rl.training import CHECKPOINT, load_algorithm

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = _dejong_run(tmp_path, 3, ["train.tensorboard=false", "train.num_threads=1"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

    def no_environment(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a checkpoint built an environment")

    monkeypatch.setattr(training, "make_task", no_environment)
    rebuilt = load_algorithm(result.run_dir / CHECKPOINT)
    obs = torch.zeros(3, 1)
    assert torch.equal(rebuilt.act(obs), result.algorithm.act(obs))


def test_a_run_is_built_alike_whatever_thread_count_its_caller_has() -> None:
    """The critic's orthogonal initialization (a QR factorization) rounds differently on two
    threads: a run started from a two-thread process (a sweep worker, ``make demo``) once began
    from other weights than the same seed started from a one-thread one."""
    from difftraffic_rl.training import Trainer, resolve_config

    config = resolve_config("pacecar-2lane", "ppo", seed=1, overrides=["train.num_threads=1"])
    before = torch.get_num_threads()
    states = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            states.append(Trainer(config).algorithm.state_dict())
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    critic_one, critic_two = states[0]["critic"], states[1]["critic"]
    assert critic_one.keys() == critic_two.keys()
    for name, tensor in critic_one.items():
        assert torch.equal(tensor, critic_two[name]), name


def test_shipped_configs_state_only_what_differs_so_a_changed_default_reaches_them() -> None:
    import dataclasses
    from importlib import resources

    from difftraffic_rl.algorithms import get_algorithm
    from difftraffic_rl.config import RunConfig, TrainSettings

    def same(a: object, b: object) -> bool:
        listed = (list, tuple)
        return list(a) == list(b) if isinstance(a, listed) and isinstance(b, listed) else a == b

    files = sorted((resources.files("difftraffic_rl") / "configs").iterdir(), key=str)
    assert len(files) > 50
    for path in files:
        values = yaml.safe_load(path.read_text())
        algorithm = get_algorithm(values["algo"]).config_class()
        defaults = {
            "train": dataclasses.asdict(TrainSettings()),
            "hyperparameters": dataclasses.asdict(algorithm),
        }
        for section, section_defaults in defaults.items():
            for key, value in (values.get(section) or {}).items():
                assert not same(value, section_defaults[key]), f"{path.name}: {section}.{key}"
        # What a file does not name is the dataclass default when resolved.
        resolved = RunConfig.from_dict(values).resolved()["hyperparameters"]
        for key, value in dataclasses.asdict(algorithm).items():
            if key not in (values.get("hyperparameters") or {}):
                assert same(resolved[key], value), f"{path.name}: {key}"


def test_print_config_shows_every_resolved_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from difftraffic_rl.cli import main

    argv = ["train", "--task", "pacecar-2lane", "--algo", "gippo", "--print-config"]
    assert main([*argv, "--set", "gamma=0.9"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 500 and shown["train"]["checkpoint_every"] == 1
    assert shown["hyperparameters"]["gamma"] == 0.9
    assert shown["hyperparameters"]["actor_hidden"] == [512, 64, 64]
    assert "alpha0" in shown["hyperparameters"] and "gae_lambda" in shown["hyperparameters"]


@pytest.mark.parametrize("algo", [*ALGOS, "pe"])
def test_shipped_cartpole_configs_learn_un_normalized_values_as_the_authors(algo: str) -> None:
    """Every Cartpole configuration of the authors (SonSang/DiffRL, examples/cfg/grad_ppo_alpha:
    gippo/, basic_lr/, basic_rp/ and the top-level one) sets `normalize_value: False`
    (docs/fidelity.md, row 9), and the paper's budget is 500 epochs of horizon 32."""
    values = RunConfig.from_dict(default_config("cartpole", algo)).resolved()
    assert values["hyperparameters"]["normalize_value"] is False
    assert (values["train"]["epochs"], values["hyperparameters"]["horizon"]) == (500, 32)


@pytest.mark.parametrize("variant", ["1lane", "2lane", "3lane", "4lane", "10lane"])
@pytest.mark.parametrize("algo", ALGOS)
def test_shipped_pace_car_configs_hold_the_authors_traffic_settings(
    variant: str, algo: str
) -> None:
    """Appendix 7.4.2 and the authors' traffic run configurations (docs/fidelity.md, row 9):
    their critics learn un-normalized values (`normalize_value: False` in every one)."""
    rates = {"lr": 3e-4, "rp": 1e-3, "lrp": 3e-4, "ppo": 3e-4, "gippo": 3e-4}
    values = RunConfig.from_dict(default_config(f"pacecar-{variant}", algo)).resolved()
    hp = values["hyperparameters"]
    assert hp["actor_lr"] == rates[algo]
    assert (hp["horizon"], hp["actor_hidden"], hp["critic_hidden"]) == (32, [512, 64, 64], [64, 64])
    assert (hp["critic_lr"], hp["gamma"], hp["gae_lambda"]) == (1e-3, 0.99, 0.95)
    assert (hp["normalize_obs"], hp["normalize_value"]) == (True, False)
    assert (values["train"]["num_envs"], values["train"]["epochs"]) == (64, 500)
    if algo == "gippo":
        assert (hp["alpha0"], hp["alpha_lr"], hp["max_alpha"]) == (0.1, 1e-5, 1.0)
