"""The sweep summary table and the curve loader used by the plot command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from difftraffic_rl.plot import load_curve
from difftraffic_rl.sweep import (
    COMMIT_FILE,
    format_iqm,
    report_preamble,
    run_summaries,
    source_commit,
    summarize,
)


def _fake_run(root: Path, name: str, algo: str, rewards: list[float], seconds: float) -> Path:
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"task": "dejong", "algo": algo}))
    lines = ["epoch,env_steps,wall_time,cpu_time,reward_smoothed"]
    for i, reward in enumerate(rewards, start=1):
        elapsed = seconds * i / len(rewards)
        lines.append(f"{i},{64 * i},{elapsed},{elapsed},{reward}")
    (run / "progress.csv").write_text("\n".join(lines) + "\n")
    return run


def test_summary_reports_final_and_best_mean_and_std_over_seeds(tmp_path: Path) -> None:
    runs = [
        _fake_run(tmp_path, "a", "gippo", [-3.0, -1.0, -2.0], 3.0),
        _fake_run(tmp_path, "b", "gippo", [-5.0, -3.0, -4.0], 6.0),
        _fake_run(tmp_path, "c", "ppo", [-9.0, -8.0], 1.0),
    ]
    table = summarize(runs).splitlines()
    # final rewards -2 and -4: IQM of two keeps both; the interval spans the two seeds
    assert table[2] == "| dejong | gippo | 2 | -3 ± 1.4 | -3 [-4, -2] | -2 ± 1.4 | 1.500 |"
    assert table[3] == "| dejong | ppo | 1 | -8 ± 0 | -8 [-8, -8] | -8 ± 0 | 0.500 |"


def test_load_curve_names_missing_columns(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, "a", "ppo", [-1.0], 1.0)
    assert load_curve(run) == ([64.0], [-1.0])
    with pytest.raises(ValueError, match="alpha"):
        load_curve(run, "alpha")


class KilledError(Exception):
    pass


def test_resumable_sweep_run_continues_an_interrupted_run_and_skips_a_finished_one(
    tmp_path: Path,
) -> None:
    from difftraffic_rl.sweep import _one_run, _record_commit, run_name
    from difftraffic_rl.training import train

    settings = ["train.tensorboard=false", "train.checkpoint_every=2"]
    full = Path(_one_run("dejong", "ppo", 0, 5, str(tmp_path / "full"), settings, True))
    assert full == tmp_path / "full" / run_name("dejong", "ppo", 0)

    def kill_after_epoch_3(row: dict[str, float]) -> None:
        if row["epoch"] == 3:
            raise KilledError

    with pytest.raises(KilledError):
        train(
            "dejong",
            "ppo",
            seed=0,
            epochs=5,
            logdir=tmp_path / "killed",
            overrides=settings,
            progress=False,
            callback=kill_after_epoch_3,
            run_name=run_name("dejong", "ppo", 0),
        )
    killed = Path(_one_run("dejong", "ppo", 0, 5, str(tmp_path / "killed"), settings, True))

    def rewards(run: Path) -> list[float]:
        return load_curve(run)[1]

    assert len(rewards(killed)) == 5
    assert rewards(killed) == rewards(full)
    finished_log = (full / "progress.csv").read_text()
    _one_run("dejong", "ppo", 0, 5, str(tmp_path / "full"), settings, True)
    assert (full / "progress.csv").read_text() == finished_log  # skipped, not re-run
    # every sweep process that trained a run recorded its commit once (the killed run's first
    # process was no sweep; the skipped finished run records nothing); the summary carries them
    commit = source_commit()
    assert (full / COMMIT_FILE).read_text() == commit + "\n"
    assert (killed / COMMIT_FILE).read_text() == commit + "\n"
    (full / COMMIT_FILE).write_text("0123abc\n")
    _one_run("dejong", "ppo", 0, 5, str(tmp_path / "full"), settings, True)  # finished: skipped
    assert (full / COMMIT_FILE).read_text() == "0123abc\n"
    _record_commit(full, commit)
    _record_commit(full, commit)
    assert (full / COMMIT_FILE).read_text().split() == ["0123abc", commit]
    (summary,) = run_summaries([full])
    assert summary.commits == ("0123abc", commit)
    assert f"Runs trained at commit `0123abc`, `{commit}`." in "\n".join(
        report_preamble("T", "cmd", "setting", [summary])
    )


def test_a_sweep_refuses_kept_runs_trained_with_other_settings(tmp_path: Path) -> None:
    """A kept run that the sweep would now train differently (another epoch count, a changed
    shipped configuration or override) would report another experiment: the sweep stops before
    training anything and names each such run and setting."""
    from difftraffic_rl.sweep import _check_kept_runs, _one_run, run_sweep

    settings = ["train.tensorboard=false"]
    run = Path(_one_run("dejong", "ppo", 0, 2, str(tmp_path), settings, True))
    log = (run / "progress.csv").read_text()

    def sweep(epochs: int, overrides: list[str]) -> None:
        run_sweep(["dejong"], ["ppo"], [0], epochs, tmp_path, overrides=overrides, resume=True)

    with pytest.raises(
        ValueError,
        match=rf"{run.name}: hyperparameters.actor_lr 0.0001 \(this sweep: 0.001\)",
    ):
        sweep(2, [*settings, "hyperparameters.actor_lr=1e-3"])
    with pytest.raises(ValueError, match=r"train.epochs 2 \(this sweep: 3\)"):
        sweep(3, settings)
    assert (run / "progress.csv").read_text() == log  # nothing was trained
    # how often it checkpoints or logs, or on how many threads, does not change what it learned
    quiet = [*settings, "train.checkpoint_every=5", "train.num_threads=2"]
    _check_kept_runs([("dejong", "ppo", 0)], 2, tmp_path, quiet)


def test_sweep_with_epochs_per_task_names_the_tasks_without_a_count(tmp_path: Path) -> None:
    from difftraffic_rl.sweep import run_sweep

    with pytest.raises(ValueError, match=r"no count for tasks \['ackley'\]; it names \['dejong'\]"):
        run_sweep(["dejong", "ackley"], ["ppo"], [1], {"dejong": 2}, tmp_path)


def test_iqm_interval_contains_the_iqm_and_is_reproducible() -> None:
    values = [67.0, 930.0, 934.0, 940.0, 1000.0]
    text = format_iqm(values, ".1f")
    iqm, low, high = (
        float(x) for x in text.replace("[", "").replace("]", "").replace(",", "").split()
    )
    assert iqm == pytest.approx(934.7, abs=0.05)
    assert 67.0 <= low <= iqm <= high <= 1000.0 and low < high
    assert format_iqm(values, ".1f") == text
    assert format_iqm([5.0, 5.0, 5.0], ".1f") == "5.0 [5.0, 5.0]"
    assert format_iqm([float("nan")]) == "n/a"


def test_source_commit_names_the_checked_out_commit() -> None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert source_commit() in (head, head + "+changes")


def test_a_finished_run_kept_as_its_record_is_skipped_and_reported_from_it(
    tmp_path: Path,
) -> None:
    import shutil

    from difftraffic_rl.sweep import RECORD_FILES, _one_run, cached_evaluation, evaluated_summaries
    from difftraffic_rl.training import CHECKPOINT

    settings = ["train.tensorboard=false"]
    run = Path(_one_run("dejong", "ppo", 0, 3, str(tmp_path / "runs"), settings, True, 2))
    # the sweep evaluated the run as it finished: the record alone reports it, checkpoint gone
    assert json.loads((run / "evaluation.json").read_text())["episodes"] == 2
    (run / CHECKPOINT).unlink()
    evaluated = cached_evaluation(run, episodes=2)
    kept = tmp_path / "kept" / run.name
    kept.mkdir(parents=True)
    for name in RECORD_FILES:
        shutil.copy(run / name, kept / name)
    log = (kept / "progress.csv").read_text()

    assert Path(_one_run("dejong", "ppo", 0, 3, str(tmp_path / "kept"), settings, True)) == kept
    assert (kept / "progress.csv").read_text() == log  # skipped: nothing trained it again
    assert not (kept / CHECKPOINT).exists()
    (summary,), returns = evaluated_summaries([kept], {"dejong": 3}, episodes=2)
    assert summary.epochs == 3
    assert returns[("dejong", "ppo", 0)] == evaluated
    # the sampled-action evaluation of the same episodes comes from the same record
    cached = json.loads((kept / "evaluation.json").read_text())
    assert cached_evaluation(kept, 2, "sampled") == cached["stochastic_mean"]
    assert cached["deterministic_mean"] == evaluated != cached["stochastic_mean"]
    with pytest.raises(ValueError, match="without its checkpoint.*over 2 episodes, not 4"):
        cached_evaluation(kept, episodes=4)

    # a record that misses epochs, or the evaluation, is no finished run: it trains from scratch
    (kept / "progress.csv").write_text("\n".join(log.splitlines()[:2]) + "\n")
    _one_run("dejong", "ppo", 0, 3, str(tmp_path / "kept"), settings, True)
    assert (kept / CHECKPOINT).exists()
    assert load_curve(kept) == load_curve(run)
    assert not (kept / "evaluation.json").exists()  # the stale evaluation went with the record
