"""Results reported as Agarwal et al. (2021) recommend, through ``rliable``.

*Deep RL at the Edge of the Statistical Precipice* (NeurIPS 2021) asks for the interquartile mean
(IQM) of the runs with a stratified bootstrap confidence interval rather than a mean ± std over a
handful of seeds, the probability that one algorithm beats another (with its interval), and
performance profiles. :func:`iqm_interval`, :func:`probability_of_improvement` and
:func:`plot_performance_profiles` compute those with the ``rliable`` library;
:func:`write_report` makes the markdown report and its plots from run directories in one call
(``difftraffic-rl report RUN_DIR ...``).

Scores are per run: by default the final smoothed training reward (``measure="final"``), or the
best smoothed reward (``"best"``, the GI-PPO authors' measure). Aggregates over several tasks use
scores normalized per task to ``[0, 1]`` between the lowest and highest score any run of the
report reached on it, since tasks' raw rewards are on unrelated scales.

Every bootstrap draws from a ``numpy`` generator seeded by ``seed``: the same runs give the same
report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from difftraffic_rl.sweep import RunSummary

__all__ = [
    "MEASURES",
    "Scores",
    "comparison_markdown",
    "iqm_interval",
    "normalized_scores",
    "plot_performance_profiles",
    "probability_of_improvement",
    "profile_path",
    "report_markdown",
    "run_scores",
    "write_report",
]

BOOTSTRAP_REPS = 2000
"""Bootstrap resamples per interval; the interval's ends move by ~1 % of its width between
seeds at this count, well inside the interval itself."""

MEASURES = ("final", "best")
"""Per-run scores a report can use: the last or the best smoothed training reward."""

Scores = dict[tuple[str, str], list[float]]
"""Per ``(task, algorithm)``, one score per run (in seed order)."""


def _interval(
    scores: dict[str, np.ndarray | list[np.ndarray]],
    func: object,
    reps: int,
    seed: int,
    vector: bool = False,
) -> tuple[Any, Any, Any]:
    """``(point, low, high)`` of ``func`` over the single entry of ``scores``: floats, or arrays
    with ``vector``."""
    from rliable import library

    # rliable's stratified bootstrap draws its indices from numpy's global generator whatever
    # random_state says: seed it for this call and give the caller's state back.
    caller_state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # arch, under rliable, deprecates the RandomState that rliable passes it
            warnings.simplefilter("ignore", FutureWarning)
            point, interval = library.get_interval_estimates(
                scores, func, reps=reps, random_state=np.random.RandomState(seed)
            )
    finally:
        np.random.set_state(caller_state)
    (key,) = point
    if vector:
        return np.asarray(point[key]), interval[key][0], interval[key][1]
    low, high = np.asarray(interval[key]).reshape(2)
    return float(np.asarray(point[key]).reshape(())), float(low), float(high)


def iqm_interval(
    values: Sequence[float], reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> tuple[float, float, float]:
    """``(IQM, low, high)``: the interquartile mean of one task's runs and its 95 % stratified
    bootstrap interval (NaN scores left out; all three NaN when none is finite)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    return _iqm(np.asarray(finite, dtype=np.float64)[:, None], reps, seed)


def _iqm(scores: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    """IQM of ``scores [runs, tasks]`` with its 95 % stratified bootstrap interval."""
    from rliable import metrics

    return _interval({"runs": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps, seed)


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> tuple[float, float, float]:
    """``(P(X > Y), low, high)``: the probability that a run of algorithm X scores above a run
    of Y on a task drawn at random (ties count half), averaged over tasks, with its 95 %
    stratified bootstrap interval.

    Args:
        x, y: scores ``[runs, tasks]`` of the two algorithms on the same tasks (the run counts
            may differ).
    """
    from rliable import metrics

    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be [runs, tasks] over the same tasks, got {x.shape} and {y.shape}"
        )
    return _interval({"x,y": [x, y]}, metrics.probability_of_improvement, reps, seed)


def normalized_scores(scores: Scores, tasks: Sequence[str]) -> Scores:
    """Scores min-max normalized per task over every run of every algorithm on it (a task
    whose runs all score the same maps to 1)."""
    result = {}
    for task in tasks:
        pooled = [v for (t, _), vs in scores.items() if t == task for v in vs]
        low, high = min(pooled), max(pooled)
        for (t, algo), vs in scores.items():
            if t == task:
                result[(t, algo)] = [(v - low) / (high - low) if high > low else 1.0 for v in vs]
    return result


def plot_performance_profiles(
    normalized: dict[str, np.ndarray], out: str | Path, reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> Path:
    """Plot each algorithm's performance profile — the fraction of its runs whose normalized
    score exceeds tau, for tau from 0 to 1, with a 95 % stratified bootstrap band — to ``out``.

    Args:
        normalized: per algorithm label, normalized scores ``[runs, tasks]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = np.linspace(0.0, 1.0, 101)

    def profile(scores: np.ndarray) -> np.ndarray:
        return np.array([np.mean(scores > tau) for tau in taus])

    figure, axis = plt.subplots(figsize=(6, 4))
    for label, scores in normalized.items():
        # rliable's create_performance_profile takes no seed; the same profile through
        # _interval is reproducible.
        fraction, low, high = _interval({label: scores}, profile, reps, seed, vector=True)
        axis.plot(taus, fraction, label=label)
        axis.fill_between(taus, low, high, alpha=0.2)
    axis.set_xlabel("normalized score τ")
    axis.set_ylabel("fraction of runs with score > τ")
    axis.set_ylim(0.0, 1.0)
    axis.legend()
    axis.grid(alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _label(algo: str) -> str:
    from difftraffic_rl.algorithms import ALGORITHMS

    return ALGORITHMS[algo].label if algo in ALGORITHMS else algo


def _format(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.4g} [{value[1]:.4g}, {value[2]:.4g}]"


def run_scores(runs: Sequence[RunSummary], measure: str = "final") -> Scores:
    """Each run's final (``"final"``) or best (``"best"``) smoothed reward, by task and
    algorithm."""
    if measure not in MEASURES:
        raise ValueError(f"measure={measure!r} is invalid; valid values: {list(MEASURES)}")
    scores: Scores = {}
    for run in sorted(runs, key=lambda r: (r.task, r.algo, r.seed)):
        scores.setdefault((run.task, run.algo), []).append(
            run.final if measure == "final" else run.best
        )
    return scores


def _ordered_algorithms(scores: Scores, reference: str) -> list[str]:
    return sorted({a for _, a in scores}, key=lambda a: (a != reference, a))


def profile_path(report: str | Path) -> Path:
    """Where a report's performance-profile plot goes: beside it, ``<stem>_profiles.png``."""
    report = Path(report)
    return report.with_name(report.stem + "_profiles.png")


def comparison_markdown(
    scores: Scores,
    reference: str = "gippo",
    profile_image: str | Path | None = None,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> str:
    """The comparison across algorithms: the probability that ``reference`` improves on each
    other algorithm over the tasks both ran; over several tasks, the IQM of the normalized
    scores; and, when ``profile_image`` is given and two or more algorithms ran every task, the
    performance profiles plotted to that file and linked (by file name)."""
    from difftraffic_rl.sweep import markdown_table

    tasks = sorted({t for t, _ in scores})
    algos = _ordered_algorithms(scores, reference)
    normalized = normalized_scores(scores, tasks)
    lines: list[str] = []
    if reference in algos and len(algos) > 1:
        rows = []
        for other in algos[1:]:
            shared = [t for t in tasks if (t, reference) in scores and (t, other) in scores]
            if shared:
                x, y = (_matrix(normalized, shared, a) for a in (reference, other))
                poi = probability_of_improvement(x, y, reps, seed)
                rows.append(
                    [f"{_label(reference)} > {_label(other)}", str(len(shared)), _format(poi)]
                )
        lines += [
            f"Probability of improvement of {_label(reference)} over each algorithm (a run of "
            f"{_label(reference)} scoring above a run of the other on the same task, averaged "
            "over the tasks both ran; 0.5 is a tie; 95 % stratified bootstrap interval):",
            "",
            markdown_table(["comparison", "tasks", "P [95 % CI]"], rows),
        ]
    # algorithms with runs on every task
    complete = {
        a: _matrix(normalized, tasks, a) for a in algos if all((t, a) in scores for t in tasks)
    }
    if len(tasks) > 1 and complete:
        lines += [
            "IQM over all tasks of the scores normalized per task (0 = the lowest score any run "
            "reached on the task, 1 = the highest):",
            "",
            markdown_table(
                ["algorithm", "normalized IQM [95 % CI]"],
                [[_label(a), _format(_iqm(matrix, reps, seed))] for a, matrix in complete.items()],
            ),
        ]
    if profile_image is not None and len(complete) > 1:
        image = plot_performance_profiles(
            {_label(a): matrix for a, matrix in complete.items()}, profile_image, reps, seed
        )
        lines += [
            f"![performance profiles: fraction of runs above each normalized score]({image.name})",
            "",
        ]
    return "\n".join(lines)


def report_markdown(
    runs: list[RunSummary],
    measure: str = "final",
    reference: str = "gippo",
    profile_image: str | Path | None = None,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> str:
    """The report's markdown: per task and algorithm, runs, mean ± std and IQM [95 % CI], then
    :func:`comparison_markdown`."""
    from difftraffic_rl.sweep import format_mean_std, markdown_table

    if not runs:
        raise ValueError("no runs to report (no run directory holds a logged epoch)")
    scores = run_scores(runs, measure)
    algos = _ordered_algorithms(scores, reference)
    per_task = markdown_table(
        ["task", "algorithm", "runs", "mean ± std", "IQM [95 % CI]"],
        (
            [task, _label(algo), str(len(vs)), format_mean_std(vs, ".4g", ".2g")]
            + [_format(iqm_interval(vs, reps, seed))]
            for (task, algo), vs in sorted(
                scores.items(), key=lambda kv: (kv[0][0], algos.index(kv[0][1]))
            )
        ),
    )
    return "\n".join(
        [
            f"Per-run score: the {measure} smoothed training reward. IQM: interquartile mean "
            f"over runs; CI: 95 % stratified bootstrap ({reps} resamples, rliable).",
            "",
            per_task,
            comparison_markdown(scores, reference, profile_image, reps, seed),
        ]
    )


def _matrix(normalized: Scores, tasks: Sequence[str], algo: str) -> np.ndarray:
    """``[runs, tasks]`` scores of ``algo``. rliable needs as many runs on every task: where
    counts differ, the smallest is used (each task's first runs by seed)."""
    count = min(len(normalized[(t, algo)]) for t in tasks)
    return np.array([normalized[(t, algo)][:count] for t in tasks], dtype=np.float64).T


def write_report(
    runs: list[RunSummary],
    out: str | Path,
    measure: str = "final",
    reference: str = "gippo",
    title: str = "Results",
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> Path:
    """Write the markdown report to ``out`` and the performance profiles beside it (``out``
    with suffix ``_profiles.png``, when two or more algorithms ran every task); return ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = report_markdown(runs, measure, reference, profile_path(out), reps, seed)
    out.write_text(f"# {title}\n\n{text}")
    return out
