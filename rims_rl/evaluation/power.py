"""Seeds per core needed to detect a given score ratio in one game, from the per-seed spread already measured.

For a game and split, the ratio effect ``rho`` is a difference of seed means ``rho * D`` with ``D`` the ratio's
denominator as :mod:`rims_rl.evaluation.games` computes it (``max(S_lstm, S_ref, S_random + margin) - S_random``,
from the data). The seed-to-seed standard deviation ``sigma`` is the pooled within-core SD of both cores' seed means.
The seeds needed per core are the smallest ``n`` at which the two-sided two-sample t-test at level ``alpha`` (equal
seeds per core, ``2n - 2`` degrees of freedom) has the requested power against a difference of ``rho * D``, from the
noncentral t distribution. Because ``sigma`` is itself estimated from few seeds, a second number uses its one-sided
80% upper confidence bound (chi-square with the pooled degrees of freedom) instead: the seeds needed if the spread is
as large as the data plausibly allow. Both assume normal seed means; a game whose seeds split into successes and
failures (MinAtar Freeway at 250k steps) is not normal and its numbers are rough.

Command line::

    python -m rims_rl.evaluation.power docs/results/minatar_250k/eval/minatar-* -o OUT --ratio 0.1 0.2
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from rims_rl.evaluation.games import DEFAULT_MARGIN, GameScores, common_splits, load_game
from rims_rl.evaluation.report import atomic_write_text

MAX_SEEDS = 10_000


def seeds_for_power(effect: float, sigma: float, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Smallest seeds per core (>= 2) at which a two-sided two-sample t-test detects ``effect`` with ``power``.

    :param effect: the true difference of means (> 0)
    :param sigma: the common per-seed standard deviation (>= 0)
    :param power: wanted probability of rejecting
    :param alpha: two-sided level
    :return: seeds per core, or None above :data:`MAX_SEEDS`
    """
    if sigma == 0:
        return 2

    def achieved(n: int) -> float:
        df, ncp = 2 * n - 2, effect / (sigma * math.sqrt(2 / n))
        crit = stats.t.ppf(1 - alpha / 2, df)
        return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))

    # the normal approximation is a lower bound; the t-test's answer is a few seeds above it
    n0 = 2 * ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sigma / effect) ** 2
    if n0 > MAX_SEEDS:
        return None
    n = max(2, math.floor(n0) - 2)
    while achieved(n) < power:
        n += 1
    return n if n <= MAX_SEEDS else None


def seeds_needed(
    games: Sequence[GameScores],
    ratios: Sequence[float] = (0.1, 0.2),
    power: float = 0.8,
    alpha: float = 0.05,
    actions: str = "sampled",
    margin: float = DEFAULT_MARGIN,
) -> list[dict[str, Any]]:
    """
    :param games: the games' scores (seeds per core >= 2 in each)
    :param ratios: the ratio effects to detect (> 0)
    :param power: wanted power
    :param alpha: two-sided level
    :param actions: the action mode whose seeds are used
    :param margin: the ratio's floor (as in :mod:`rims_rl.evaluation.games`)
    :return: one row per game and split every game has: the denominator, the pooled seed SD (and its upper bound),
        and per ratio the seeds per core needed (None: more than :data:`MAX_SEEDS`)
    """
    rows = []
    for split in common_splits(games):
        for game in games:
            s = game.sample(split, actions)
            n_r, n_l = s.rims.shape[-1], s.lstm.shape[-1]
            if min(n_r, n_l) < 2:
                raise ValueError(f"{game.name}: a core has one seed; no seed-to-seed spread to plan from")
            df = n_r + n_l - 2
            sigma = math.sqrt(((n_r - 1) * s.rims.var(ddof=1) + (n_l - 1) * s.lstm.var(ddof=1)) / df)
            sigma_high = sigma * math.sqrt(df / stats.chi2.ppf(0.2, df))
            random = float(s.random_mean)
            denom = max(float(s.lstm.mean()), s.ref, random + margin) - random
            included = max(float(s.rims.mean()), float(s.lstm.mean())) - random >= margin
            row: dict[str, Any] = {"game": game.name, "split": split, "included": included, "denominator": denom,
                                   "sigma": sigma, "sigma_high": sigma_high, "n_rims": n_r, "n_lstm": n_l}  # fmt: skip
            for rho in ratios:
                row[f"n_{rho:g}"] = seeds_for_power(rho * denom, sigma, power, alpha)
                row[f"n_high_{rho:g}"] = seeds_for_power(rho * denom, sigma_high, power, alpha)
            rows.append(row)
    return rows


def _n(n: int | None) -> str:
    return f"> {MAX_SEEDS}" if n is None else str(n)


def seeds_markdown(rows: Sequence[dict[str, Any]], ratios: Sequence[float], power: float, alpha: float) -> str:
    """:return: the table with its method, as markdown"""
    head = " | ".join(f"seeds, ratio {rho:g}" for rho in ratios)
    lines = [f"Seeds per core needed to detect a score ratio at {power:.0%} power, two-sided level {alpha:g}, per game",
             "and split (python -m rims_rl.evaluation.power). D: the ratio's denominator (the LSTM's margin over",
             "random, floored at the inclusion margin); SD: pooled seed-to-seed SD of both cores' seed means. Each cell:",
             "seeds from the measured SD, then (in parentheses) from its 80% upper confidence bound. Normal seed means",
             "assumed; Freeway's bimodal seeds (some score 0) make its numbers rough. `in agg.`: whether a core beats",
             "random by the margin (the games' inclusion rule); where neither does, D is the floor.", "",
             f"| game | split | in agg. | D | SD (upper) | {head} |", "| --- " * (5 + len(ratios)) + "|"]  # fmt: skip
    for r in rows:
        cells = " | ".join(f"{_n(r[f'n_{rho:g}'])} ({_n(r[f'n_high_{rho:g}'])})" for rho in ratios)
        sd = f"{r['sigma']:.2f} ({r['sigma_high']:.2f})"
        lines.append(
            f"| {r['game']} | {r['split']} | {'yes' if r['included'] else 'no'} | {r['denominator']:.2f} | {sd} | {cells} |"
        )
    return "\n".join(lines) + "\n"


def seeds_csv(rows: Sequence[dict[str, Any]], ratios: Sequence[float]) -> str:
    """:return: one row per game and split; empty seed counts mean more than MAX_SEEDS"""
    cols = ["game", "split", "included", "denominator", "sigma", "sigma_high", "n_rims", "n_lstm"]
    cols += [f"{p}_{rho:g}" for rho in ratios for p in ("n", "n_high")]

    def cell(x: Any) -> str:
        if x is None:
            return ""
        return f"{x:.6g}" if isinstance(x, float) else str(int(x)) if isinstance(x, bool) else str(x)

    lines = [",".join(cols)] + [",".join(cell(r[c]) for c in cols) for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write seeds_needed.md and seeds_needed.csv; exit 2 on a usage mistake."""
    parser = argparse.ArgumentParser(prog="python -m rims_rl.evaluation.power", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="evaluator result folders, one per game")
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--ratio", type=float, nargs="+", default=[0.1, 0.2], help="ratio effects to detect")
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--alpha", type=float, default=0.05, help="two-sided level")
    parser.add_argument("--actions", default="sampled", choices=["sampled", "greedy"])
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="the ratio's floor (games.py's margin)")
    args = parser.parse_args(argv)
    if not (0 < args.power < 1 and 0 < args.alpha < 1 and all(r > 0 for r in args.ratio) and args.margin > 0):
        parser.error("need 0 < --power < 1, 0 < --alpha < 1, every --ratio > 0 and --margin > 0")
    try:
        games = [load_game(f) for f in args.folders]
        rows = seeds_needed(games, args.ratio, args.power, args.alpha, args.actions, args.margin)
    except (OSError, ValueError, KeyError) as error:
        print(f"power: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = seeds_markdown(rows, args.ratio, args.power, args.alpha)
    atomic_write_text(out / "seeds_needed.md", markdown)
    atomic_write_text(out / "seeds_needed.csv", seeds_csv(rows, args.ratio))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
