"""Learning curves of several training seeds per group, with seed bands, and a check that they have flattened.

A run's curve is its periodic evaluation (``evaluations.npz``, written by the training CLI's evaluation callback:
mean return of ``--eval-episodes`` episodes every ``--eval-freq`` steps). Seeds are the unit: at every step the
band is the 95% t-interval of the seed means (and each seed is drawn thinly). The flatness check compares each
seed's score over the last two evaluation points with the two points one window earlier (``window`` steps, default
a fifth of the budget), paired by seed: a small gain whose interval covers 0 says the curves have flattened.
A group of one seed has no interval: no band, "n/a (1 seed)" in the table, empty interval cells in the CSV.

Scores of different games are never averaged: a sweep folder of several envs (say the five MinAtar games) gives
one set of files per game, ``OUT/<env>/learning_curves.{png,csv,md}``, and ``OUT/learning_curves.md`` with every
game's flatness table; a sweep of one env writes ``OUT/learning_curves.{png,csv,md}`` with groups named by entry.

Command line::

    python -m rims_rl.evaluation.curves logs/sweeps/gridworld-comparison -o docs/results/NAME
    python -m rims_rl.evaluation.curves --group rims=RUN1,RUN2 --group lstm=RUN3,RUN4 -o OUT
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rims_rl.evaluation.report import atomic_write_text

_TRIAL = re.compile(r"^(?P<env>.+)__(?P<entry>[^_].*?)__s(?P<seed>\d+)$")


def run_curve(run: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """
    :param run: a run folder (or its evaluations.npz)
    :return: (timesteps, mean evaluation return at each)
    :raises FileNotFoundError: no evaluations.npz
    """
    run = Path(run)
    path = run if run.suffix == ".npz" else run / "evaluations.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluations.npz in {run} (train with --eval-freq > 0)")
    with np.load(path) as data:
        return np.asarray(data["timesteps"], dtype=np.int64), np.asarray(data["results"], dtype=np.float64).mean(axis=1)


def seed_curves(runs: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """
    :param runs: run folders of one group (one per seed)
    :return: (timesteps common to every run, scores of shape (n_runs, n_points))
    :raises ValueError: no runs, or no evaluation step common to all
    """
    if not runs:
        raise ValueError("no runs")
    curves = [run_curve(r) for r in runs]
    common = sorted(set.intersection(*(set(t.tolist()) for t, _ in curves)))
    if not common:
        raise ValueError("the runs share no evaluation step")
    steps = np.array(common, dtype=np.int64)
    scores = np.stack([s[np.searchsorted(t, steps)] for t, s in curves])
    return steps, scores


def t_interval(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    :param values: samples along ``axis`` (the seeds)
    :return: (mean, lower, upper) of the 95% t-interval of the mean (lower and upper NaN for one sample: no interval)
    """
    from scipy import stats

    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = stats.t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def flatness(steps: np.ndarray, scores: np.ndarray, window: int | None = None) -> dict[str, float]:
    """
    Paired by seed: mean of the last two evaluation points minus the mean of the two points ``window`` steps
    earlier.

    :param steps: evaluation steps
    :param scores: (n_seeds, n_points)
    :param window: steps between the two windows (default: a fifth of the last step)
    :return: gain, its 95% t-interval over seeds (NaN for one seed), the steps compared, the number of seeds
    """
    window = int(window or steps[-1] // 5)
    end = scores[:, -2:].mean(axis=1)
    before_idx = np.searchsorted(steps, steps[-1] - window, side="right") - 1
    before_idx = max(int(before_idx), 1)
    before = scores[:, before_idx - 1 : before_idx + 1].mean(axis=1)
    mean, low, high = t_interval(end - before)
    return {"gain": float(mean), "ci_low": float(low), "ci_high": float(high), "from_step": int(steps[before_idx]),
            "to_step": int(steps[-1]), "n_seeds": int(scores.shape[0])}  # fmt: skip


def sweep_games(sweep_folder: str | Path) -> dict[str, dict[str, list[Path]]]:
    """
    :param sweep_folder: a sweep folder (``<env>__<entry>__s<seed>/<algo>/<env id>_<n>/`` per trial)
    :return: env -> entry -> finished run folders (those with a final model), seeds in order; every env with a
        trial folder is a key, ``{}`` while none of its runs has finished
    """
    games: dict[str, dict[str, list[tuple[int, Path]]]] = {}
    for trial in sorted(Path(sweep_folder).iterdir()):
        match = _TRIAL.match(trial.name)
        if not trial.is_dir() or match is None:
            continue
        groups = games.setdefault(match["env"], {})
        for config in sorted(trial.glob("*/*/config.yml")):
            run = config.parent
            final = run / (run.name.rsplit("_", 1)[0] + ".zip")
            if final.is_file() and (run / "evaluations.npz").is_file():
                groups.setdefault(match["entry"], []).append((int(match["seed"]), run))
    return {env: {entry: [run for _, run in sorted(runs)] for entry, runs in groups.items()} for env, groups in games.items()}


def sweep_groups(sweep_folder: str | Path) -> dict[str, list[Path]]:
    """
    :param sweep_folder: a sweep folder (see :func:`sweep_games`)
    :return: group -> finished run folders, seeds in order; a group is the entry (``rims_ppo``) in a sweep of one
        env and ``<env>/<entry>`` in a sweep of several (their scores must not be averaged: see :func:`sweep_games`)
    """
    games = sweep_games(sweep_folder)
    if len(games) <= 1:
        return {entry: runs for groups in games.values() for entry, runs in groups.items()}
    return {f"{env}/{entry}": runs for env, groups in games.items() for entry, runs in groups.items()}


def curves_csv(groups: Mapping[str, Sequence[str | Path]]) -> str:
    """
    :param groups: group name -> run folders
    :return: CSV: group, step, n_seeds, mean, ci_low, ci_high (empty for one seed), then one column per run (a sweep:
        in seed order)
    """
    width = max(len(runs) for runs in groups.values())
    lines = [",".join(["group", "step", "n_seeds", "mean", "ci_low", "ci_high", *[f"run_{i}" for i in range(width)]])]
    for name, runs in groups.items():
        steps, scores = seed_curves(runs)
        mean, low, high = t_interval(scores)
        for j, step in enumerate(steps):
            cells = [f"{x:.6g}" for x in scores[:, j]] + [""] * (width - len(runs))
            stats = [f"{mean[j]:.6g}", *("" if np.isnan(x) else f"{x:.6g}" for x in (low[j], high[j]))]
            lines.append(",".join([name, str(step), str(len(runs)), *stats, *cells]))
    return "\n".join(lines) + "\n"


def plot_curves(groups: Mapping[str, Sequence[str | Path]], path: str | Path, title: str = "Learning curves") -> None:
    """
    Mean evaluation return per group against steps, 95% t-band over seeds (none for one seed), each seed a thin line.

    :param groups: group name -> run folders
    :param path: the PNG to write
    :param title: figure title
    """
    from rims_rl.evaluation.report import _pyplot, _savefig

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, runs) in enumerate(groups.items()):
        steps, scores = seed_curves(runs)
        mean, low, high = t_interval(scores)
        color = f"C{i}"
        for row in scores:
            ax.plot(steps, row, color=color, alpha=0.15, linewidth=0.7)
        ax.plot(steps, mean, color=color, linewidth=2, label=f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(steps, low, high, color=color, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean of the run's episodes)")
    ax.set_title(f"{title}\nline: mean over seeds; band: 95% t-interval over seeds; thin: each seed")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _savefig(fig, Path(path))
    plt.close(fig)


def flatness_markdown(groups: Mapping[str, Sequence[str | Path]], window: int | None = None) -> str:
    """
    :param groups: group name -> run folders
    :param window: see :func:`flatness`
    :return: a markdown table of each group's late gain with its interval ("n/a (1 seed)" for one seed)
    """
    rows = ["| group | seeds | score at the end | gain over the last window | 95% CI (t, seeds) |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, runs in groups.items():
        steps, scores = seed_curves(runs)
        f = flatness(steps, scores, window)
        end = scores[:, -2:].mean(axis=1).mean()
        gain = f"{f['gain']:+.3f} ({f['from_step']:,} -> {f['to_step']:,} steps)"
        ci = "n/a (1 seed)" if f["n_seeds"] < 2 else f"[{f['ci_low']:+.3f}, {f['ci_high']:+.3f}]"
        rows.append(f"| {name} | {f['n_seeds']} | {end:.3f} | {gain} | {ci} |")
    return "\n".join(rows) + "\n"


def _write(out: Path, groups: Mapping[str, Sequence[str | Path]], window: int | None, title: str) -> str:
    """Write ``out/learning_curves.{csv,md,png}``; return the flatness table."""
    out.mkdir(parents=True, exist_ok=True)
    table = flatness_markdown(groups, window)
    atomic_write_text(out / "learning_curves.csv", curves_csv(groups))
    atomic_write_text(out / "learning_curves.md", table)
    plot_curves(groups, out / "learning_curves.png", title)
    return table


def main(argv: list[str] | None = None) -> int:
    """Write learning_curves.png, learning_curves.csv and learning_curves.md (per game for a sweep of several
    games, plus a combined learning_curves.md); exit 2 on a usage mistake."""
    parser = argparse.ArgumentParser(prog="python -m rims_rl.evaluation.curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", nargs="?", default=None, help="a sweep folder (groups are its entries, per game)")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=RUN[,RUN...]", help="a group of run folders")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for learning_curves.{png,csv,md}")
    parser.add_argument("--window", type=int, default=None, help="flatness window in steps (default: a fifth of the budget)")
    parser.add_argument("--title", default="Learning curves")
    args = parser.parse_args(argv)
    groups: dict[str, list[Path]] = {}
    if args.sweep is not None:
        if not Path(args.sweep).is_dir():
            parser.error(f"{args.sweep} is not a folder")
        games = sweep_games(args.sweep)
        if len(games) > 1:
            if args.group:
                parser.error("--group cannot be added to a sweep of several games (whose game would it join?)")
            if not any(games.values()):
                parser.error("no finished runs: give a sweep folder or --group")
            return _main_games(games, Path(args.output_dir), args.window, args.title)
        groups.update(next(iter(games.values()), {}))  # one env: groups named by entry, as sweep_groups names them
    for spec in args.group:
        name, sep, runs = spec.partition("=")
        if not sep or not name or not runs:
            parser.error(f"--group {spec!r}: expected NAME=RUN[,RUN...]")
        groups[name] = [Path(r) for r in runs.split(",")]
    if not groups:
        parser.error("no finished runs: give a sweep folder or --group")
    out = Path(args.output_dir)
    try:
        _write(out, groups, args.window, args.title)
    except (OSError, ValueError) as error:
        print(f"curves: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}/learning_curves.png, .csv, .md")
    return 0


def _main_games(games: Mapping[str, Mapping[str, Sequence[Path]]], out: Path, window: int | None, title: str) -> int:
    """A sweep of several games: ``out/<env>/learning_curves.*`` per game, ``out/learning_curves.md`` for all."""
    sections = []
    try:
        for env, groups in games.items():
            table = _write(out / env, groups, window, f"{title}: {env}") if groups else "No finished runs yet.\n"
            sections.append(f"## {env}\n\n{table}")
        atomic_write_text(out / "learning_curves.md", "\n".join(sections))
    except (OSError, ValueError) as error:
        print(f"curves: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}/<env>/learning_curves.png, .csv, .md for {', '.join(env for env, g in games.items() if g)}; "
          f"{out}/learning_curves.md")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
