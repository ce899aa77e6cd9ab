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
seeds stays. ``python -m rims_rl.evaluation.power SEEDS_CSV`` prints the tables for the evaluator's ``seeds.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

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


def main(argv: list[str] | None = None) -> int:
    """``python -m rims_rl.evaluation.power SEEDS_CSV [...]``: the power tables. :return: exit code"""
    p = argparse.ArgumentParser(prog="python -m rims_rl.evaluation.power", description=__doc__.splitlines()[0])
    p.add_argument("seeds_csv", help="the evaluator's seeds.csv of a finished comparison")
    p.add_argument("--actions", default="sampled", choices=["sampled", "greedy"])
    p.add_argument("--splits", nargs="+", default=None, help="held-out splits whose DiD is an endpoint (default: all)")
    p.add_argument(
        "--contrast",
        nargs="+",
        default=["novel-distractors:more-distractors"],
        metavar="A:B",
        help="DiD contrasts DiD(A) - DiD(B) as endpoints",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 13, 25, 40, 50], help="seeds per core for the MDE")
    p.add_argument("--episodes", nargs="+", default=[], metavar="SPLIT=N", help="planned episodes per seed on a split")
    p.add_argument("--t-quantiles", action="store_true", help="t quantiles (df 2n - 2) instead of normal ones")
    args = p.parse_args(argv)
    try:
        scores = read_seed_scores(args.seeds_csv, "success", args.actions)
        episodes = {s: int(n) for s, _, n in (e.rpartition("=") for e in args.episodes)}
    except (OSError, ValueError) as error:
        print(f"{p.prog}: error: {error}")
        return 2
    held = args.splits or [s for s in next(iter(scores["lstm"].values())) if s != "train"]
    endpoints = [Endpoint.did(s) for s in held] + [Endpoint.contrast(*c.split(":", 1)) for c in args.contrast]
    try:
        print(power_report(scores, endpoints, args.seeds, episodes, t_quantiles=args.t_quantiles))
    except ValueError as error:
        print(f"{p.prog}: error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
