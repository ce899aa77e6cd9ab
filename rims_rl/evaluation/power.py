"""Power of a seed-level RIMs-versus-LSTM comparison, planned from a finished comparison's per-seed scores.

An endpoint is a per-seed quantity, a signed sum of one seed's mean scores on some splits: the generalization gap
of a held-out split (``train - split``) for its DiD, or ``b - a`` for the DiD contrast ``DiD(a) - DiD(b)``. Its
DiD is the LSTM seeds' mean minus the RIMs seeds' mean, so with ``n`` seeds per core and per-seed standard
deviation ``s`` (pooled within cores) the smallest true DiD found with power 0.8 by a two-sided test at 0.05 is

    MDE = (z_0.975 + z_0.8) * s * sqrt(2 / n)                (normal approximation)

and the seeds per core needed for a given MDE are ``2 * ((z_0.975 + z_0.8) * s / MDE)^2``. For success rates,
``s^2`` splits into the spread between seeds and the episode noise of each seed's means: a split's success over
``n`` episodes has variance ``p (1 - p) / n``, estimated per seed without bias as ``p^(1 - p^) / (n - 1)`` and
averaged over seeds. Playing ``m`` episodes instead of ``n`` scales that part by ``n / m``; the spread between
seeds stays.

Across games (MinAtar, Atari) the effect is a score ratio instead, and ``ratio`` gives the seeds per core needed to
detect one in a game from the per-seed spread already measured.

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

    python -m rims_rl.evaluation.power ratio docs/results/minatar_250k/eval/minatar-* -o OUT --ratio 0.1 0.2

The DiD tables for the evaluator's ``seeds.csv``::

    python -m rims_rl.evaluation.power did SEEDS_CSV
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from rims_rl.evaluation.games import DEFAULT_MARGIN, GameScores, common_splits, load_game
from rims_rl.evaluation.report import atomic_write_text

MAX_SEEDS = 10_000
PROG = "python -m rims_rl.evaluation.power"

#: seed scores: core ("rims"/"lstm") -> seed -> split -> (seed mean, episodes)
SeedScores = dict[str, dict[int, dict[str, tuple[float, int]]]]


def read_seed_scores(path: str | Path, metric: str = "success", actions: str = "sampled") -> SeedScores:
    """
    :param path: the evaluator's ``seeds.csv`` (one row per agent, split and action mode)
    :param metric: ``success`` or ``return``
    :param actions: ``sampled`` or ``greedy``
    :return: core -> seed -> split -> (seed mean, episodes)
    :raises ValueError: no row for these actions, or a seed scored twice on a split
    """
    out: SeedScores = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            if row["actions"] != actions or row["core"] not in ("rims", "lstm") or row[metric] == "":
                continue
            seeds = out.setdefault(row["core"], {}).setdefault(int(row["seed"]), {})
            if row["split"] in seeds:
                raise ValueError(f"{path}: {row['core']} seed {row['seed']} is scored twice on {row['split']}")
            seeds[row["split"]] = (float(row[metric]), int(row["n_episodes"]))
    if set(out) != {"rims", "lstm"}:
        raise ValueError(f"{path}: needs {metric} of both cores with {actions} actions; found {sorted(out) or 'none'}")
    return out


@dataclass(frozen=True)
class Endpoint:
    """A per-seed quantity ``sum_s coef[s] * score[s]`` whose DiD (LSTM mean - RIMs mean) is tested.

    :param name: e.g. ``did:novel-distractors`` or ``contrast:novel-distractors|more-distractors``
    :param coef: split -> coefficient
    """

    name: str
    coef: tuple[tuple[str, float], ...]

    @classmethod
    def did(cls, split: str, train: str = "train") -> Endpoint:
        """The DiD of one held-out split: per seed the gap ``train - split``."""
        return cls(f"did:{split}", ((train, 1.0), (split, -1.0)))

    @classmethod
    def contrast(cls, a: str, b: str) -> Endpoint:
        """The DiD contrast ``DiD(a) - DiD(b)``: per seed ``score[b] - score[a]`` (the training split cancels)."""
        return cls(f"contrast:{a}|{b}", ((b, 1.0), (a, -1.0)))


@dataclass(frozen=True)
class Variance:
    """An endpoint's per-seed variance, split into spread between seeds and episode noise.

    :param endpoint: the endpoint
    :param n_seeds: seeds per core it was estimated from
    :param total: pooled within-core variance of the per-seed quantity at the episodes played
    :param episode: per split, the episode-noise variance it holds (``coef^2 p (1 - p) / (n - 1)``, mean over seeds)
    :param episodes: per split, the episodes per seed played
    :param did: the observed DiD (LSTM mean - RIMs mean)
    """

    endpoint: Endpoint
    n_seeds: tuple[int, int]
    total: float
    episode: dict[str, float]
    episodes: dict[str, int]
    did: float

    @property
    def between(self) -> float:
        """Variance between seeds beyond episode noise (floored at 0)."""
        return max(self.total - sum(self.episode.values()), 0.0)

    def sd(self, episodes: Mapping[str, int] | None = None) -> float:
        """
        :param episodes: episodes per seed per split (a split left out: as played)
        :return: the per-seed standard deviation with that many episodes
        """
        episodes = episodes or {}
        noise = sum(v * self.episodes[s] / episodes.get(s, self.episodes[s]) for s, v in self.episode.items())
        return math.sqrt(self.between + noise)


def endpoint_variance(scores: SeedScores, endpoint: Endpoint, binary: bool = True) -> Variance:
    """
    :param scores: :func:`read_seed_scores`
    :param endpoint: the endpoint
    :param binary: the scores are success rates (episode noise binomial); else no episode noise is separated
    :return: the endpoint's per-seed variance
    :raises ValueError: fewer than 2 seeds in a core, or a split an endpoint needs is missing for some seed
    """
    values: dict[str, np.ndarray] = {}
    noise: dict[str, list[float]] = {s: [] for s, _ in endpoint.coef}
    episodes: dict[str, set[int]] = {s: set() for s, _ in endpoint.coef}
    for core in ("rims", "lstm"):
        seeds = scores[core]
        if len(seeds) < 2:
            raise ValueError(f"{endpoint.name}: {core} has {len(seeds)} seed(s); the variance needs 2 or more")
        rows = []
        for seed, by_split in seeds.items():
            missing = [s for s, _ in endpoint.coef if s not in by_split]
            if missing:
                raise ValueError(f"{endpoint.name}: {core} seed {seed} has no score on {missing[0]}")
            rows.append(sum(c * by_split[s][0] for s, c in endpoint.coef))
            for s, c in endpoint.coef:
                p, n = by_split[s]
                episodes[s].add(n)
                noise[s].append(c * c * p * (1 - p) / (n - 1) if binary and n > 1 else 0.0)
        values[core] = np.array(rows)
    n_r, n_l = len(values["rims"]), len(values["lstm"])
    pooled = ((n_r - 1) * values["rims"].var(ddof=1) + (n_l - 1) * values["lstm"].var(ddof=1)) / (n_r + n_l - 2)
    counts = {s: max(n) for s, n in episodes.items()}
    return Variance(endpoint, (n_r, n_l), float(pooled), {s: float(np.mean(v)) for s, v in noise.items()}, counts,
                    float(values["lstm"].mean() - values["rims"].mean()))  # fmt: skip


def _z(alpha: float, power: float, df: float | None = None) -> float:
    dist = stats.norm if df is None else stats.t(df)
    return float(dist.ppf(1 - alpha / 2) + dist.ppf(power))


def mde(
    sd: float, n_rims: int, n_lstm: int | None = None, alpha: float = 0.05, power: float = 0.8, t_quantiles: bool = False
) -> float:
    """
    :param sd: per-seed standard deviation of the endpoint
    :param n_rims: RIMs seeds
    :param n_lstm: LSTM seeds (default: as many)
    :param t_quantiles: t quantiles with ``n_rims + n_lstm - 2`` degrees of freedom instead of normal ones (larger
        for few seeds)
    :return: the minimum detectable DiD, ``(z_{1-alpha/2} + z_power) * sd * sqrt(1/n_rims + 1/n_lstm)``
    """
    n_lstm = n_rims if n_lstm is None else n_lstm
    z = _z(alpha, power, n_rims + n_lstm - 2 if t_quantiles else None)
    return z * sd * math.sqrt(1 / n_rims + 1 / n_lstm)


def seeds_for(sd: float, target: float, alpha: float = 0.05, power: float = 0.8, t_quantiles: bool = False) -> int:
    """
    :return: seeds per core (equal arms, at least 2) for an MDE of ``target``: ``ceil(2 ((z + z) sd / target)^2)``;
        with ``t_quantiles`` the smallest n whose :func:`mde` is at most ``target``
    """
    n = max(math.ceil(2 * (_z(alpha, power) * sd / target) ** 2), 2)
    while t_quantiles and mde(sd, n, alpha=alpha, power=power, t_quantiles=True) > target:
        n += 1
    return n


def split_drops(scores: SeedScores, core: str = "lstm", train: str = "train") -> dict[str, tuple[float, float, float]]:
    """
    :return: per held-out split, the core's mean drop ``train - split`` over seeds and its 95% t-interval
        (mean, low, high)
    """
    seeds = scores[core]
    splits = [s for s in next(iter(seeds.values())) if s != train]
    out = {}
    for split in splits:
        gaps = np.array([by[train][0] - by[split][0] for by in seeds.values()])
        half = stats.t.ppf(0.975, len(gaps) - 1) * gaps.std(ddof=1) / math.sqrt(len(gaps)) if len(gaps) > 1 else math.nan
        out[split] = (float(gaps.mean()), float(gaps.mean() - half), float(gaps.mean() + half))
    return out


def power_report(
    scores: SeedScores,
    endpoints: Sequence[Endpoint],
    seeds: Sequence[int] = (10, 13, 25, 40, 50),
    episodes: Mapping[str, int] | None = None,
    targets: Sequence[float] = (0.10, 0.07, 0.05),
    t_quantiles: bool = False,
) -> str:
    """
    :param scores: :func:`read_seed_scores`
    :param endpoints: the endpoints
    :param seeds: seeds per core at which to give the MDE
    :param episodes: the planned episodes per seed per split (default: as played)
    :param targets: MDEs for which to give the seeds per core needed
    :param t_quantiles: t quantiles (df = 2n - 2) in the MDE instead of normal ones
    :return: markdown: the LSTM's drop per split, then per endpoint its per-seed SD, the episode-noise share and
        the MDE at each seed count, as played and with the planned episodes
    """
    lines = ["| split | LSTM drop (train - split) | 95% CI |", "| --- | ---: | --- |"]
    for split, (mean, low, high) in split_drops(scores).items():
        lines.append(f"| {split} | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] |")
    planned = "" if not episodes else " with " + ", ".join(f"{n} on {s}" for s, n in episodes.items())
    head = ["endpoint", "observed DiD", "SD as played", "episode-noise share", f"SD{planned or ' (planned)'}"]
    head += [f"MDE n={n}" for n in seeds] + [f"seeds for {t:.2f}" for t in targets]
    lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for endpoint in endpoints:
        v = endpoint_variance(scores, endpoint)
        share = sum(v.episode.values()) / v.total if v.total > 0 else math.nan
        sd = v.sd(episodes)
        cells = [endpoint.name, f"{v.did:+.3f}", f"{v.sd():.3f}", f"{share:.2f}", f"{sd:.3f}"]
        cells += [f"{mde(sd, n, t_quantiles=t_quantiles):.3f}" for n in seeds]
        cells += [str(seeds_for(sd, t, t_quantiles=t_quantiles)) for t in targets]
        lines.append("| " + " | ".join(cells) + " |")
    n_r, n_l = len(scores["rims"]), len(scores["lstm"])
    played = sorted({n for by in scores["lstm"].values() for _, n in by.values()})
    lines += ["", f"Estimated from {n_r} RIMs and {n_l} LSTM seeds, {', '.join(map(str, played))} episodes per seed and "
              f"split; MDE = ({'t' if t_quantiles else 'z'}_0.975 + {'t' if t_quantiles else 'z'}_0.8) x SD x sqrt(2/n)"
              f"{' (t with 2n - 2 df)' if t_quantiles else ''}, n seeds per core, from the SD"
              f"{planned or ' as played'}."]  # fmt: skip
    return "\n".join(lines)


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
             "and split (python -m rims_rl.evaluation.power ratio). D: the ratio's denominator (the LSTM's margin over",
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


def _did_tables(args: argparse.Namespace) -> int:
    """The ``did`` command: MDE tables of a finished comparison's ``seeds.csv``."""
    try:
        scores = read_seed_scores(args.seeds_csv, "success", args.actions)
        episodes = {s: int(n) for s, _, n in (e.rpartition("=") for e in args.episodes)}
    except (OSError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    held = args.splits or [s for s in next(iter(scores["lstm"].values())) if s != "train"]
    endpoints = [Endpoint.did(s) for s in held] + [Endpoint.contrast(*c.split(":", 1)) for c in args.contrast]
    try:
        print(power_report(scores, endpoints, args.seeds, episodes, t_quantiles=args.t_quantiles))
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _ratio_tables(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``ratio`` command: write seeds_needed.md and seeds_needed.csv for per-game score ratios."""
    if not (0 < args.power < 1 and 0 < args.alpha < 1 and all(r > 0 for r in args.ratio) and args.margin > 0):
        parser.error("need 0 < --power < 1, 0 < --alpha < 1, every --ratio > 0 and --margin > 0")
    try:
        games = [load_game(f) for f in args.folders]
        rows = seeds_needed(games, args.ratio, args.power, args.alpha, args.actions, args.margin)
    except (OSError, ValueError, KeyError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = seeds_markdown(rows, args.ratio, args.power, args.alpha)
    atomic_write_text(out / "seeds_needed.md", markdown)
    atomic_write_text(out / "seeds_needed.csv", seeds_csv(rows, args.ratio))
    print(markdown)
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """:return: the command's parser and its ``ratio`` subparser (whose range errors exit 2)"""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    did = sub.add_parser("did", help="MDE and seeds needed for DiD endpoints, from a comparison's seeds.csv")
    did.add_argument("seeds_csv", help="the evaluator's seeds.csv of a finished comparison")
    did.add_argument("--actions", default="sampled", choices=["sampled", "greedy"])
    did.add_argument("--splits", nargs="+", default=None, help="held-out splits whose DiD is an endpoint (default: all)")
    did.add_argument("--contrast", nargs="+", default=["novel-distractors:more-distractors"], metavar="A:B",
                     help="DiD contrasts DiD(A) - DiD(B) as endpoints")  # fmt: skip
    did.add_argument("--seeds", type=int, nargs="+", default=[10, 13, 25, 40, 50], help="seeds per core for the MDE")
    did.add_argument("--episodes", nargs="+", default=[], metavar="SPLIT=N", help="planned episodes per seed on a split")
    did.add_argument("--t-quantiles", action="store_true", help="t quantiles (df 2n - 2) instead of normal ones")
    ratio = sub.add_parser("ratio", help="seeds per core needed to detect a score ratio per game")
    ratio.add_argument("folders", nargs="+", help="evaluator result folders, one per game")
    ratio.add_argument("-o", "--output-dir", required=True)
    ratio.add_argument("--ratio", type=float, nargs="+", default=[0.1, 0.2], help="ratio effects to detect")
    ratio.add_argument("--power", type=float, default=0.8)
    ratio.add_argument("--alpha", type=float, default=0.05, help="two-sided level")
    ratio.add_argument("--actions", default="sampled", choices=["sampled", "greedy"])
    ratio.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="the ratio's floor (games.py's margin)")
    return parser, ratio


def main(argv: list[str] | None = None) -> int:
    """``python -m rims_rl.evaluation.power {did,ratio} ...``: the power tables. :return: exit code"""
    parser, ratio = build_parser()
    args = parser.parse_args(argv)
    return _did_tables(args) if args.command == "did" else _ratio_tables(args, ratio)


if __name__ == "__main__":
    sys.exit(main())
