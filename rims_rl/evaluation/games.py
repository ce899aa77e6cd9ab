"""Across games: per-game score ratios of RIMs against the LSTM and their median and IQM over games (MinAtar, Atari).

Each game is its own evaluator comparison (``evaluate.py --rims ... --lstm ... --setting minatar-<game>``, or a
sweep's report folders), with its own agents; seeds are the unit within a game. For every split name that all
games share (``train`` and the flavours common to all), per game:

- the seed means of each core, the random policy's score and the score ratio
  ``(S_rims - S_lstm) / (max(S_lstm, S_ref, S_random + margin) - S_random)``: the paper's ratio
  (:func:`rims_rl.evaluation.scores.score_ratio`) with its denominator floored at ``margin`` (default 1 point).
  The floor binds only where the LSTM beats random by less than the margin; there the paper's ratio divides by a
  fraction of a point or is undefined (denominator <= 0). With it, every bootstrap replicate has a ratio: none is
  dropped, and the replicates where the floor bound are counted and reported per game.
- Inclusion rule (set before the 5M-step MinAtar runs): a game enters the ratio aggregates only when at least one
  core's mean beats the random score by ``margin`` or more. A game where neither does measures noise; its scores and
  ratio are still reported, marked as left out.
- Interval of each game's ratio and of the median and IQM (rliable's definition) over the included games: a
  t-interval, ``point +- t(df) * se``. ``se`` sums the bootstrap variances of the three independent sources of
  every game (RIMs' seeds, the LSTM's seeds, the random episodes; each resampled on its own, its variance times
  n/(n-1)), so the denominator's uncertainty (the LSTM's seeds and the random episodes) is in the interval; ``df``
  is the Welch-Satterthwaite combination of those sources (n - 1 degrees of freedom each). tests/test_calibration.py
  measures its calibration under nulls built from the committed MinAtar per-seed data (both cores drawn from one
  distribution per game): the aggregates' 95% intervals exclude 0 in at most ~5% of comparisons with 3 and with 10
  seeds per core. Below ``MIN_SEEDS_INTERVAL`` seeds in a core the interval is n/a (not calibrated there).
- The number of games where RIMs' mean is higher, with a two-sided sign-test p-value over all games.

The percentile bootstrap this replaces (each core's seeds resampled within each game, the random score fixed)
excluded 0 in 7-13% of null comparisons with 3 seeds per core.

Command line::

    python -m rims_rl.evaluation.games logs/sweeps/minatar-comparison/report/*_vs_lstm_ppo_1 -o docs/results/NAME

or, evaluating the zoo's agents of each game first (one result folder per game, then these tables)::

    python evaluate.py --setting minatar-breakout minatar-asterix minatar-freeway minatar-seaquest minatar-spaceinvaders

A result folder is read from its ``results.json`` (with the random episodes from ``episodes.csv`` when present), or,
without it, from its ``scores.csv`` and ``ratios.csv``; nothing is replayed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from rims_rl.evaluation.report import atomic_write_text
from rims_rl.evaluation.scores import iqm, score_ratio

DEFAULT_MARGIN = 1.0
"""Score points by which a core must beat random for its game to enter the ratio aggregates; the ratio's floor."""

MIN_SEEDS_INTERVAL = 3
"""Seeds per core (in the smaller core of any game) from which intervals are given: calibration is measured there."""

SOURCES = ("rims", "lstm", "random")


@dataclass
class GameSample:
    """One game's scores on one split, vectorized over leading axes (simulations) when the arrays have them.

    :param rims: RIMs seed means, shape (..., n_rims)
    :param lstm: LSTM seed means, shape (..., n_lstm)
    :param random_episodes: the random policy's episode scores, shape (..., m); None when only their mean is known
    :param random_mean: the random score, shape (...)
    :param random_se: standard error of the random score (used when ``random_episodes`` is None), shape (...)
    :param random_n: episodes behind the random score
    :param ref: S_ref (human score; 0 for MinAtar)
    """

    rims: np.ndarray
    lstm: np.ndarray
    random_episodes: np.ndarray | None
    random_mean: np.ndarray
    random_se: np.ndarray
    random_n: int
    ref: float

    @classmethod
    def from_episodes(cls, rims: Any, lstm: Any, random_episodes: Any, ref: float) -> GameSample:
        """:param random_episodes: shape (..., m), m >= 1"""
        eps = np.asarray(random_episodes, dtype=np.float64)
        se = eps.std(-1, ddof=1) / math.sqrt(eps.shape[-1]) if eps.shape[-1] > 1 else np.zeros(eps.shape[:-1])
        return cls(np.asarray(rims, dtype=np.float64), np.asarray(lstm, dtype=np.float64), eps, eps.mean(-1), se,
                   eps.shape[-1], float(ref))  # fmt: skip


@dataclass
class RatioStats:
    """Per-game ratios and their aggregates with intervals (arrays over the samples' leading axes).

    :param ratio: per game, shape (..., G)
    :param low: per game interval bounds, shape (..., G); nan when not given (``high`` likewise)
    :param se: per game, the ratio's standard error, shape (..., G)
    :param included: per game, whether it enters the aggregates, shape (..., G)
    :param floored: per game, whether the floor binds at the point estimate, shape (..., G)
    :param n_floored: per game, bootstrap replicates where the floor bound, shape (..., G)
    :param n_undefined: per game, replicates among those where the paper's ratio is undefined (denominator <= 0)
    :param n_replicates: per game, its bootstrap replicates (``len(SOURCES) * n_bootstrap``)
    :param agg: "median" and "iqm" -> (value, low, high, df), each shape (...); nan without an included game
    :param n_included: games in the aggregates, shape (...)
    :param note: why there is no interval ("" when there is one)
    """

    ratio: np.ndarray
    low: np.ndarray
    high: np.ndarray
    se: np.ndarray
    included: np.ndarray
    floored: np.ndarray
    n_floored: np.ndarray
    n_undefined: np.ndarray
    n_replicates: int
    agg: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    n_included: np.ndarray
    note: str


def floored_ratio(s_rims: Any, s_lstm: Any, s_random: Any, s_ref: Any, margin: float) -> Any:
    """(S_rims - S_lstm) / (max(S_lstm, S_ref, S_random + margin) - S_random), elementwise (defined for margin > 0)."""
    return score_ratio(s_rims, s_lstm, s_random, np.maximum(s_ref, np.asarray(s_random) + margin))


def _aggregates(values: np.ndarray, included: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQM over the included games: values (..., G), included broadcastable to it; nan where none."""
    inc = np.broadcast_to(included, values.shape)
    ordered = np.sort(np.where(inc, values, np.inf), axis=-1)  # left-out games sort last
    k = inc.sum(-1)
    median, mean = np.full(k.shape, np.nan), np.full(k.shape, np.nan)
    for kk in range(1, values.shape[-1] + 1):
        sel = k == kk
        if sel.any():
            part = ordered[sel][:, :kk]
            median[sel], mean[sel] = np.median(part, axis=-1), iqm(part)
    return median, mean


def _resample_mean(x: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of the last axis: x (..., n) -> (..., n_bootstrap)."""
    idx = rng.integers(0, x.shape[-1], (*x.shape[:-1], n_bootstrap, x.shape[-1]))
    return np.take_along_axis(x[..., None, :], idx, axis=-1).mean(-1)


def _t_half(v: np.ndarray, parts: Sequence[tuple[np.ndarray, int]], confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Half-width ``t(df) sqrt(v)`` with Welch-Satterthwaite df over independent variance parts (variance, dof)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        df = v**2 / sum(p**2 / dof for p, dof in parts)
        half = stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(v)
    return np.where(v > 0, half, 0.0), df


def ratio_intervals(
    games: Sequence[GameSample],
    margin: float = DEFAULT_MARGIN,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    rng: np.random.Generator | None = None,
) -> RatioStats:
    """Per-game floored ratios, the inclusion rule, and t-intervals from per-source bootstrap variances.

    Every game's three sources (RIMs' seeds, the LSTM's seeds, the random episodes) are resampled one at a time, the
    others held at their observed values; a source's variance (of the game's ratio, and of each aggregate with that
    game's ratio replaced) is multiplied by n/(n-1) and the sources' variances are summed. With only a mean and a
    standard error for the random score, its replicates are normal draws instead.

    :param games: one sample per game, all with the same leading shape
    :param margin: the inclusion margin and the ratio's floor (score points, > 0)
    :param confidence: interval mass
    :param n_bootstrap: replicates per source and game
    :param rng: random generator
    :return: the statistics
    """
    if not margin > 0:
        raise ValueError(f"the margin must be > 0 (it floors the ratio's denominator); got {margin}")
    if n_bootstrap < 2:
        raise ValueError(f"need n_bootstrap >= 2; got {n_bootstrap}")
    rng = rng if rng is not None else np.random.default_rng(0)
    mr = np.stack([g.rims.mean(-1) for g in games], -1)
    ml = np.stack([g.lstm.mean(-1) for g in games], -1)
    rnd = np.stack([np.asarray(g.random_mean, dtype=np.float64) for g in games], -1)
    ref = np.array([g.ref for g in games])
    ratio = floored_ratio(mr, ml, rnd, ref, margin)
    included = np.maximum(mr, ml) - rnd >= margin
    floored = np.maximum(ml, ref) - rnd < margin
    median, mean = _aggregates(ratio, included)
    n_min = min(min(g.rims.shape[-1], g.lstm.shape[-1]) for g in games)
    nan = np.full(ratio.shape, np.nan)
    shape_g = ratio.shape
    n_floored, n_undefined = np.zeros(shape_g, dtype=np.int64), np.zeros(shape_g, dtype=np.int64)
    game_parts: list[list[tuple[np.ndarray, int]]] = [[] for _ in games]
    agg_parts: dict[str, list[tuple[np.ndarray, int]]] = {"median": [], "iqm": []}
    for j, g in enumerate(games):
        for source in SOURCES:
            r_b, l_b, x_b = mr[..., j, None], ml[..., j, None], rnd[..., j, None]  # (..., 1): held fixed
            if source == "rims":
                r_b, n = _resample_mean(g.rims, n_bootstrap, rng), g.rims.shape[-1]
            elif source == "lstm":
                l_b, n = _resample_mean(g.lstm, n_bootstrap, rng), g.lstm.shape[-1]
            elif g.random_episodes is not None:
                x_b, n = _resample_mean(g.random_episodes, n_bootstrap, rng), g.random_n
            else:  # a mean and its standard error only: normal replicates, no n/(n-1) correction needed
                x_b = g.random_mean[..., None] + g.random_se[..., None] * rng.standard_normal((*mr.shape[:-1], n_bootstrap))
                n = g.random_n
            r_j = floored_ratio(r_b, l_b, x_b, g.ref, margin)  # (..., B)
            paper_denominator = np.maximum(l_b, g.ref) - x_b
            n_floored[..., j] += (paper_denominator < margin).sum(-1)
            n_undefined[..., j] += np.isnan(score_ratio(r_b, l_b, x_b, g.ref)).sum(-1)
            inflate = n / (n - 1) if (n > 1 and (source != "random" or g.random_episodes is not None)) else 1.0
            dof = max(n - 1, 1)
            game_parts[j].append((r_j.var(-1, ddof=1) * inflate, dof))
            replaced = np.repeat(ratio[..., None, :], n_bootstrap, axis=-2)
            replaced[..., j] = r_j
            for name, values in zip(("median", "iqm"), _aggregates(replaced, included[..., None, :]), strict=True):
                with np.errstate(invalid="ignore"):
                    agg_parts[name].append((np.where(np.isfinite(values), values, 0.0).var(-1, ddof=1) * inflate, dof))
    note = ""
    if n_min < MIN_SEEDS_INTERVAL:
        note = f"n/a: {n_min} seed(s) in a core; the intervals are calibrated from {MIN_SEEDS_INTERVAL} seeds per core"
    low, high, se = nan.copy(), nan.copy(), nan.copy()
    agg: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for j, parts in enumerate(game_parts):
        v = np.sum([p for p, _ in parts], axis=0)
        half, _ = _t_half(v, parts, confidence)
        low[..., j], high[..., j], se[..., j] = ratio[..., j] - half, ratio[..., j] + half, np.sqrt(v)
    for name, point in (("median", median), ("iqm", mean)):
        parts = agg_parts[name]
        half, df = _t_half(np.sum([p for p, _ in parts], axis=0), parts, confidence)
        lo, hi = point - half, point + half
        if note:
            lo, hi, df = np.full_like(point, np.nan), np.full_like(point, np.nan), np.full_like(point, np.nan)
        agg[name] = (point, lo, hi, np.where(np.isfinite(point), df, np.nan))
    if note:
        low, high = nan.copy(), nan.copy()
    return RatioStats(ratio, low, high, se, included, floored, n_floored, n_undefined, len(SOURCES) * n_bootstrap, agg,
                      included.sum(-1), note)  # fmt: skip


@dataclass
class GameScores:
    """One game's comparison: per split and action mode, each core's seed means and the random score.

    :param name: the game (setting name)
    :param folder: the evaluator's result folder
    :param splits: split -> actions -> {"rims": [...], "lstm": [...], "random": float, "random_se": float,
        "random_n": int, "random_episodes": [...] or None, "ref": float or None}
    """

    name: str
    folder: Path
    splits: dict[str, dict[str, dict[str, Any]]]

    def sample(self, split: str, actions: str) -> GameSample:
        """The game's scores on one split and action mode, for :func:`ratio_intervals`."""
        s = self.splits[split][actions]
        rims, lstm, ref = np.asarray(s["rims"], dtype=np.float64), np.asarray(s["lstm"], dtype=np.float64), s["ref"] or 0.0
        if s.get("random_episodes"):
            return GameSample.from_episodes(rims, lstm, s["random_episodes"], ref)
        return GameSample(rims, lstm, None, np.asarray(float(s["random"])), np.asarray(float(s["random_se"])),
                          int(s["random_n"]), float(ref))  # fmt: skip


def _random_se(mean: float, high: float | None, n: int) -> float:
    """Standard error of a mean from its t-interval's upper bound (0 when there is none)."""
    if high is None or not math.isfinite(high) or n < 2:
        return 0.0
    return (high - mean) / float(stats.t.ppf(0.975, n - 1))


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _from_results_json(folder: Path) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    data = json.loads((folder / "results.json").read_text())
    refs = {t["label"]: t.get("ref_score") for t in data["meta"]["targets"]}
    rows = [{**r, "ci_high": (r.get("ci") or [None, None])[1], "ref": refs.get(r["env"])} for r in data["scores"]]
    name = data["meta"].get("setting") or data["meta"].get("name") or folder.name
    return str(name), _splits(rows)


def _from_csv(folder: Path) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    refs = {r["env"]: float(r["s_ref"]) for r in _csv_rows(folder / "ratios.csv") if r["s_ref"]}  # not the aggregates
    rows = [{"agent": r["agent"], "env": r["env"], "actions": r["actions"], "mean": float(r["mean"]),
             "ci_high": float(r["ci_high"]), "n_episodes": int(r["n_episodes"]), "ref": refs.get(r["env"]),
             "per_seed": [float(x) for x in r["per_seed"].split()]} for r in _csv_rows(folder / "scores.csv")]  # fmt: skip
    return folder.name, _splits(rows)


def _splits(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """split -> actions -> scores, from the evaluator's score rows (one per agent, split and action mode)."""
    splits: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        entry = splits.setdefault(row["env"], {}).setdefault(row["actions"] if row["agent"] != "random" else "*", {})
        if row["agent"] in ("rims", "lstm"):
            entry[row["agent"]] = [float(x) for x in row["per_seed"]]
            entry["ref"] = row["ref"]
        elif row["agent"] == "random":
            n = int(row["n_episodes"])
            entry.update(random=float(row["mean"]), random_n=n, random_se=_random_se(float(row["mean"]), row["ci_high"], n))
    for modes in splits.values():
        random = modes.pop("*", {})
        for mode in modes.values():
            mode.update({"random": None, "random_se": 0.0, "random_n": 1, **random, "random_episodes": None})
    return splits


def load_game(folder: str | Path) -> GameScores:
    """
    :param folder: an evaluator result folder with RIMs and LSTM agents: its ``results.json`` (else its
        ``scores.csv`` and ``ratios.csv``), and the random policy's episodes from ``episodes.csv`` when present
    :return: the game's scores
    :raises ValueError: not a readable RIMs-vs-LSTM result folder
    """
    folder = Path(folder)
    try:
        name, splits = _from_results_json(folder) if (folder / "results.json").exists() else _from_csv(folder)
        episodes = _csv_rows(folder / "episodes.csv") if (folder / "episodes.csv").exists() else []
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as error:
        raise ValueError(f"{folder}: no readable results.json, or scores.csv and ratios.csv ({error})") from None
    random_episodes: dict[str, list[float]] = {}
    for row in episodes:
        if row["agent"] == "random":
            random_episodes.setdefault(row["env"], []).append(float(row["return"]))
    for label, modes in splits.items():
        for mode in modes.values():
            mode["random_episodes"] = random_episodes.get(label)
    if not any("rims" in m and "lstm" in m for modes in splits.values() for m in modes.values()):
        raise ValueError(f"{folder}: not a RIMs-vs-LSTM comparison (evaluate.py --rims ... --lstm ...)")
    return GameScores(name, folder, splits)


def _sign_test_p(wins: int, n: int) -> float:
    return float(stats.binomtest(wins, n, 0.5).pvalue) if n else float("nan")


def across_games(
    games: Sequence[GameScores],
    split: str,
    actions: str = "sampled",
    n_bootstrap: int = 2000,
    seed: int = 0,
    margin: float = DEFAULT_MARGIN,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """
    :param games: the games' scores
    :param split: a split every game has
    :param actions: "sampled" or "greedy"
    :param n_bootstrap: bootstrap replicates per source and game
    :param seed: bootstrap seed
    :param margin: inclusion margin and ratio floor (score points)
    :param confidence: interval mass
    :return: per-game rows and the aggregates (median, IQM with intervals over the included games; wins, sign-test p)
    """
    samples = [g.sample(split, actions) for g in games]
    st = ratio_intervals(samples, margin, confidence, n_bootstrap, np.random.default_rng(seed))
    rows: list[dict[str, Any]] = []
    for j, (game, s) in enumerate(zip(games, samples, strict=True)):
        rows.append({"game": game.name, "rims": float(s.rims.mean()), "lstm": float(s.lstm.mean()),
                     "random": float(s.random_mean), "n_rims": s.rims.shape[-1], "n_lstm": s.lstm.shape[-1],
                     "ratio": float(st.ratio[j]), "ci": [float(st.low[j]), float(st.high[j])],
                     "included": bool(st.included[j]), "floored": bool(st.floored[j]),
                     "n_floored": int(st.n_floored[j]), "n_undefined": int(st.n_undefined[j])})  # fmt: skip
    out: dict[str, Any] = {"split": split, "actions": actions, "games": rows, "n_bootstrap": n_bootstrap,
                           "n_replicates": st.n_replicates, "margin": margin, "n_included": int(st.n_included),
                           "note": st.note}  # fmt: skip
    if not st.n_included:
        out["note"] = f"n/a: no game where a core beats random by {margin:g} or more"
    for name, (value, low, high, df) in st.agg.items():
        out[name] = {"value": float(value), "ci": [float(low), float(high)], "df": float(df)}
    wins = sum(row["rims"] > row["lstm"] for row in rows)
    ties = sum(row["rims"] == row["lstm"] for row in rows)
    out["wins"], out["n_games"], out["sign_p"] = int(wins), len(rows), _sign_test_p(wins, len(rows) - ties)
    return out


def common_splits(games: Sequence[GameScores]) -> list[str]:
    """:return: the split names every game has, in the first game's order"""
    return [s for s in games[0].splits if all(s in g.splits for g in games[1:])]


def _ci_text(ci: Sequence[float], note: str) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if math.isfinite(ci[0]) else ("n/a" if note else "[n/a]")


def games_markdown(results: Sequence[dict[str, Any]]) -> str:
    """
    :param results: outputs of :func:`across_games`
    :return: markdown: the method, then per split and action mode the per-game table and the aggregate line
    """
    margin, n_rep = results[0]["margin"], results[0]["n_replicates"]
    lines = [f"Score ratio (S_rims - S_lstm) / (max(S_lstm, S_ref, S_random + {margin:g}) - S_random) per game, from seed",
             f"means: the paper's ratio with its denominator floored at {margin:g} point(s), so that no bootstrap replicate",
             "is undefined. A game enters the median and IQM only when a core beats random by the same margin (`in agg.`);",
             "the others are listed, not aggregated. 95% t-intervals: standard error from bootstrap variances of each",
             "game's RIMs seeds, LSTM seeds and random episodes (each resampled on its own, times n/(n-1)), so the",
             "denominator's uncertainty is included; Welch-Satterthwaite degrees of freedom. Calibration, measured on",
             "nulls built from the MinAtar per-seed data: the aggregates' intervals exclude 0 in at most ~5% of null",
             f"comparisons at 3 and at 10 seeds per core (docs/evaluation.md). `floored`: of the {n_rep} replicates",
             "per game, those where the floor bound (in parentheses: where the paper's ratio is undefined).",
             "Sign test over all games: games where RIMs' mean is higher, two-sided.", ""]  # fmt: skip
    for res in results:
        lines += [f"### split `{res['split']}`, {res['actions']} actions", "",
                  "| game | RIMs (seeds) | LSTM (seeds) | random | ratio [95% CI] | in agg. | floored |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for row in res["games"]:
            lines.append(f"| {row['game']} | {row['rims']:.3f} ({row['n_rims']}) | {row['lstm']:.3f} ({row['n_lstm']}) | "
                         f"{row['random']:.3f} | {row['ratio']:+.3f} {_ci_text(row['ci'], res['note'])} | "
                         f"{'yes' if row['included'] else 'no'} | {row['n_floored']} ({row['n_undefined']}) |")  # fmt: skip
        med, q = res["median"], res["iqm"]
        agg = (f"Median ratio {med['value']:+.3f} {_ci_text(med['ci'], res['note'])}; IQM {q['value']:+.3f} "
               f"{_ci_text(q['ci'], res['note'])} over {res['n_included']} of {res['n_games']} games"
               if res["n_included"] else "No aggregate")  # fmt: skip
        note = f" ({res['note']})" if res["note"] else ""
        lines += ["", f"{agg}{note}; RIMs higher in {res['wins']} of {res['n_games']} games "
                  f"(sign test p = {res['sign_p']:.2f}).", ""]  # fmt: skip
    return "\n".join(lines)


GAMES_CSV_COLUMNS = ["split", "actions", "game", "rims", "lstm", "random", "n_rims", "n_lstm", "ratio", "ci_low", "ci_high",
                     "included", "n_floored", "n_undefined", "n_replicates", "note"]  # fmt: skip


def games_csv(results: Sequence[dict[str, Any]]) -> str:
    """:return: one row per split, action mode and game, then its aggregates (game ``median`` and ``iqm``, with
    ``included`` the number of games aggregated); nan where there is no value"""
    lines = [",".join(GAMES_CSV_COLUMNS)]
    for res in results:
        for row in res["games"]:
            lines.append(f"{res['split']},{res['actions']},{row['game']},{row['rims']:.6g},{row['lstm']:.6g},"
                         f"{row['random']:.6g},{row['n_rims']},{row['n_lstm']},{row['ratio']:.6g},{row['ci'][0]:.6g},"
                         f"{row['ci'][1]:.6g},{int(row['included'])},{row['n_floored']},{row['n_undefined']},"
                         f"{res['n_replicates']},")  # fmt: skip
        for name in ("median", "iqm"):
            agg = res[name]
            lines.append(f"{res['split']},{res['actions']},{name},,,,,,{agg['value']:.6g},{agg['ci'][0]:.6g},"
                         f"{agg['ci'][1]:.6g},{res['n_included']},,,,{res['note']}")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_games(
    games: Sequence[GameScores], out: str | Path, n_bootstrap: int = 2000, seed: int = 0, margin: float = DEFAULT_MARGIN
) -> str:
    """
    The across-games comparison of every split all games share, under each action mode all of them played.

    :param games: the games' scores, one comparison per game
    :param out: folder that receives ``games.md`` and ``games.csv`` (created if needed)
    :param n_bootstrap: bootstrap replicates per source and game
    :param seed: bootstrap seed
    :param margin: inclusion margin and ratio floor (score points)
    :return: the markdown written to ``games.md``
    :raises ValueError: two comparisons of one game, no split name shared by all games, a margin <= 0
    """
    if len({g.name for g in games}) != len(games):
        raise ValueError("two folders are the same game; give one comparison per game")
    splits = common_splits(games)
    if not splits:
        raise ValueError("the games share no split name")
    results = [across_games(games, split, mode, n_bootstrap, seed, margin)
               for split in splits for mode in ("sampled", "greedy")
               if all(mode in g.splits[split] for g in games)]  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = games_markdown(results)
    atomic_write_text(out / "games.md", markdown)
    atomic_write_text(out / "games.csv", games_csv(results))
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Write games.md and games.csv; exit 2 on a usage mistake."""
    parser = argparse.ArgumentParser(prog="python -m rims_rl.evaluation.games", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="evaluator result folders, one per game")
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap replicates per source and game")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="score points by which a core must beat random for its game to be aggregated; the "
                             "ratio's floor (default %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        markdown = write_games([load_game(f) for f in args.folders], args.output_dir, args.n_bootstrap, margin=args.margin)
    except (OSError, ValueError, KeyError) as error:
        print(f"games: error: {error}", file=sys.stderr)
        return 2
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
