"""Game transfer score from learning curves (progressive-networks convention, Rusu et al. 2016).

transfer score = area under the fine-tuned run's curve / area under the from-scratch run's curve, both over the
same timestep range (the shorter run's). Curves come from a run folder's evaluations.npz (SB3 EvalCallback:
``timesteps``, ``results`` of shape (n_evals, n_episodes)) or, failing that, its Monitor CSVs. Areas use the
trapezoidal rule on raw scores; the score is nan where the from-scratch area is <= 0 (games with negative
scores, e.g. Boxing early on, can make it so; compare raw areas then).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def learning_curve(run: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, mean score) of a run folder.

    :param run: the run folder (or an evaluations.npz file)
    :raises FileNotFoundError: neither evaluations.npz nor monitor CSVs
    """
    run = Path(run)
    npz = run if run.suffix == ".npz" else run / "evaluations.npz"
    if npz.is_file():
        data = np.load(npz)
        return np.asarray(data["timesteps"], dtype=np.float64), np.asarray(data["results"], dtype=np.float64).mean(axis=1)
    monitors = sorted(run.glob("**/*monitor.csv"))
    if not monitors:
        raise FileNotFoundError(f"no learning curve in {run}: no evaluations.npz and no *monitor.csv")
    from stable_baselines3.common.monitor import load_results

    frames = [load_results(str(m.parent)) for m in {m.parent: m for m in monitors}.values()]
    import pandas as pd

    df = pd.concat(frames).sort_values("t")
    return np.cumsum(df["l"].to_numpy(dtype=np.float64)), df["r"].to_numpy(dtype=np.float64)


def curve_area(timesteps: np.ndarray, scores: np.ndarray, until: float) -> float:
    """Trapezoidal area under a curve from its first point up to ``until`` (linearly interpolated at the end).

    :param timesteps: increasing x values
    :param scores: y values
    :param until: last x included
    """
    keep = timesteps <= until
    x, y = timesteps[keep], scores[keep]
    if x.size and x[-1] < until and (~keep).any():
        x = np.append(x, until)
        y = np.append(y, np.interp(until, timesteps, scores))
    if x.size < 2:
        return 0.0 if y.size else math.nan
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


@dataclass
class TransferScore:
    """Transfer score with the areas it comes from."""

    score: float
    area_finetuned: float
    area_scratch: float
    until: float
    n_finetuned: int
    n_scratch: int


def transfer_score(finetuned: Sequence[str | Path], scratch: Sequence[str | Path]) -> TransferScore:
    """Mean area of the fine-tuned runs over mean area of the from-scratch runs, on their common timestep range.

    :param finetuned: run folders started from a source-game checkpoint
    :param scratch: run folders trained from scratch on the same target game
    """
    if not finetuned or not scratch:
        raise ValueError("transfer score needs at least one fine-tuned and one from-scratch run")
    curves_f = [learning_curve(r) for r in finetuned]
    curves_s = [learning_curve(r) for r in scratch]
    until = min(float(t[-1]) for t, _ in (*curves_f, *curves_s))
    area_f = float(np.mean([curve_area(t, s, until) for t, s in curves_f]))
    area_s = float(np.mean([curve_area(t, s, until) for t, s in curves_s]))
    score = area_f / area_s if area_s > 0 else math.nan
    return TransferScore(score, area_f, area_s, until, len(finetuned), len(scratch))
